"""The report's figures, drawn with matplotlib (Agg) and returned as inline PNG data URIs.

Inline images keep report.html one self-contained file that opens from disk, with no server and
no network: it can be mailed, archived next to the model, or opened on an offline laptop.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from automl.runs.trials import TrialStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATUS_COLOURS = {TrialStatus.COMPLETE: "#2b6cb0", TrialStatus.PRUNED: "#a0aec0", TrialStatus.FAILED: "#e53e3e"}


def new_figure(width: float = 6.4, height: float = 3.4) -> Figure:
    """A figure not tied to any GUI backend (no pyplot state): safe in threads and servers."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def data_uri(figure: Figure) -> str:
    """The figure as a `data:image/png;base64,...` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def history_plot(order: Sequence[int], accuracy: Sequence[float], status: Sequence[str]) -> str:
    """Validation accuracy of each trial in finishing order, with the best so far as a step line."""
    figure = new_figure()
    axes = figure.add_subplot()
    for name, colour in STATUS_COLOURS.items():
        points = [(o, a) for o, a, s in zip(order, accuracy, status, strict=True) if s == name]
        if points:
            x, y = zip(*points, strict=True)
            axes.scatter(x, y, s=18, color=colour, label=name)
    best = np.maximum.accumulate(np.nan_to_num(np.asarray(accuracy, dtype=float), nan=0.0))
    axes.step(order, best, where="post", color="#dd6b20", label="best so far")
    axes.set(xlabel="trial (finishing order)", ylabel="validation accuracy")
    axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return data_uri(figure)


def bar_plot(names: Sequence[str], values: Sequence[float], xlabel: str) -> str:
    """Horizontal bars, first name on top (importances, phase timings)."""
    figure = new_figure(height=0.45 * len(names) + 1.0)
    axes = figure.add_subplot()
    axes.barh(list(names)[::-1], list(values)[::-1], color="#2b6cb0")
    axes.set(xlabel=xlabel)
    axes.grid(axis="x", alpha=0.3)
    return data_uri(figure)


def time_plot(seconds: Sequence[float], accuracy: Sequence[float], groups: Sequence[str]) -> str:
    """Validation accuracy against a trial's training time, one colour per head."""
    figure = new_figure()
    axes = figure.add_subplot()
    for group in sorted(set(groups)):
        points = [(s, a) for s, a, g in zip(seconds, accuracy, groups, strict=True) if g == group]
        x, y = zip(*points, strict=True)
        axes.scatter(x, y, s=18, label=group)
    axes.set(xlabel="training time of the trial (s)", ylabel="validation accuracy")
    axes.legend(title="head", fontsize="small")
    axes.grid(alpha=0.3)
    return data_uri(figure)


def histogram_plot(edges: Sequence[int], counts: Sequence[int]) -> str:
    """Classes per 10 % bin of per-class accuracy, as the studies plotted it."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(height=2.8)
    axes = figure.add_subplot()
    labels = [f"{lo}–{hi}" for lo, hi in itertools.pairwise(edges)]
    axes.bar(labels, counts, color="#2b6cb0")
    axes.set(xlabel="per-class accuracy (%)", ylabel="classes")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(axis="x", labelsize="small")
    return data_uri(figure)


def confusion_plot(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """The confusion matrix as a heat map with counts; rows are true classes."""
    counts = np.asarray(matrix)
    size = max(3.5, 0.45 * len(labels) + 1.5)
    figure = new_figure(width=size + 1.0, height=size)
    axes = figure.add_subplot()
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:
        for (i, j), count in np.ndenumerate(counts):
            if count:
                axes.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set(xlabel="predicted", ylabel="true")
    figure.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    return data_uri(figure)


def reliability_plot(bins: Sequence[dict]) -> str:
    """The reliability diagram: accuracy against mean confidence per bin (`metrics.reliability_bins`).

    Bars on the diagonal are calibrated; below it the model is overconfident. Bar areas are not counts,
    so the photos per bin are written above each bar: a bin of three photos says little.
    """
    figure = new_figure(width=4.6, height=3.8)
    axes = figure.add_subplot()
    filled = [row for row in bins if row["count"]]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    centres = [(row["low"] + row["high"]) / 2 for row in filled]
    axes.bar(centres, [row["accuracy"] for row in filled], width=width * 0.9, color="#2b6cb0", label="accuracy")
    axes.scatter(centres, [row["confidence"] for row in filled], color="#dd6b20", s=14, zorder=3, label="confidence")
    for centre, row in zip(centres, filled, strict=True):
        axes.text(centre, min(row["accuracy"] + 0.02, 1.02), str(row["count"]), ha="center", fontsize=6)
    axes.plot([0, 1], [0, 1], color="#718096", linestyle="--", linewidth=1)
    axes.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.06))
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(alpha=0.3)
    return data_uri(figure)
