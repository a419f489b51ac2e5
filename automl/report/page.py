"""report.html: one self-contained page (inline CSS and images, no script, no network) about one run.

Each section is a function from the run's files to HTML with a stable `id`, so that a test, a
link or a reader can go straight to it. A section whose input is missing (no test metrics yet, no
trials) says so instead of failing: a report of a half-finished run is still useful.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from automl.atomic import write_atomic
from automl.machine import describe as describe_machine
from automl.report import analysis, plots
from automl.runs import RunFolder, Summary, TestMetrics, TrialTable
from automl.runs.records import SelectionSummary

THUMBNAIL_PX = 112
MAX_THUMBNAILS = 24
MAX_JSON_BYTES = 64 * 1024**2
"""Largest metrics.json / summary.json read (a 100-class confusion matrix is ~40 KB)."""
LEADERBOARD_ROWS = 25
CUT_MEANING = {
    "all": "all (backbone frozen)",
    "top": "top (last block trained)",
    "half": "half (second half trained)",
    "none": "none (whole backbone trained)",
}

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>$title</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 1.2rem 3rem; color: #1a202c; }
h1 { margin: 1.2rem 0 0.2rem; } h2 { border-bottom: 1px solid #e2e8f0; padding-bottom: 0.2rem; margin-top: 2rem; }
nav { font-size: 0.9rem; margin-bottom: 1rem; } nav a { margin-right: 0.8rem; color: #2b6cb0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #edf2f7; text-align: left; }
th { background: #f7fafc; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fefcbf; } .note { color: #718096; font-size: 0.9rem; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; } .card { background: #f7fafc; border-radius: 6px;
        padding: 0.5rem 0.9rem; } .card b { display: block; font-size: 1.3rem; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.6rem; } figure { margin: 0; }
.thumbs figure { width: ${thumb}px; font-size: 0.75rem; } .thumbs img { width: ${thumb}px; height: ${thumb}px; }
img.plot { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="note">$subtitle</p>
<nav>$nav</nav>
$sections
</body>
</html>
"""
)


@dataclass
class Run:
    """The records of a run folder the report reads; each may be missing (empty)."""

    folder: RunFolder
    summary: Summary
    metrics: dict[str, Any]
    """metrics.json as `TestMetrics` dumps it (headline fields and every detail)."""
    trials: TrialTable
    photo_roots: tuple[Path, ...] = ()
    """Folders thumbnails may be read from (`_photo_roots`)."""

    @property
    def root(self) -> Path:
        return self.folder.root

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The trials as a table for the statistics (`analysis`): one row per trial, `param_<dimension>` columns."""
        return self.trials.to_frame()


def load_run(root: Path) -> Run:
    """The run folder's records; refused with `RunFolderError` when one exists but cannot be read."""
    from automl.search.tune_state import read_trials

    folder = RunFolder(root)
    trials = read_trials(folder) if folder.trials.is_file() or folder.tune.is_dir() else TrialTable()
    summary = Summary.read(folder.summary) if folder.summary.is_file() else Summary()
    metrics = TestMetrics.read(folder.metrics).model_dump(mode="json") if folder.metrics.is_file() else {}
    return Run(folder, summary, metrics, trials, _photo_roots(folder))


def _photo_roots(folder: RunFolder) -> tuple[Path, ...]:
    """Folders the report may read photos from: the run folder and the dataset its recipe.yaml names.

    metrics.json names the misclassified photos by path; a run folder from someone else could name any file
    on the machine (a FIFO, /dev/zero, a private photo to embed in the page): only these folders are read.
    The dataset's root is kept as written (not resolved): a dataset made of links to photos elsewhere is
    common, and its links are the user's own; `_thumbnail` resolves links under the run folder only.
    """
    roots = [folder.root.resolve()]
    try:
        from automl.paths import resolve_dataset
        from automl.recipe import load_recipe

        roots.append(Path(os.path.abspath(resolve_dataset(load_recipe(folder.recipe).data.folder))))
    except Exception:  # no recipe, or one that no longer validates: the run folder alone
        pass
    return tuple(roots)


# -- markup helpers ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _percent(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f} %"


def _interval(bounds: Sequence[float] | None) -> str:
    """A test accuracy's 95 % interval: on a hundred test photos one photo moves top-1 by a point."""
    return "–" if not bounds else f"{100 * bounds[0]:.1f}–{100 * bounds[1]:.1f} %"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (), best: int = -1) -> str:
    """An HTML table; `numeric` column indices are right-aligned; row `best` is highlighted."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{_e(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{' class=best' if index == best else ''}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{_e(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# -- sections ------------------------------------------------------------------------------------------


def summary_section(run: Run) -> str:
    summary, metrics = run.summary, run.metrics
    best = summary.best
    validation = best.val_accuracy if best and best.val_accuracy is not None else metrics.get("val_accuracy")
    cards = [
        ("test top-1", _percent(metrics.get("top1"))),
        ("95 % interval", _interval(metrics.get("top1_ci95"))),
        ("test top-5", _percent(metrics.get("top5"))),
        ("validation accuracy", _percent(validation)),
        ("test photos", metrics.get("n", "–")),
        ("trials done", summary.trials.done if summary.stop_reason else len(run.trials)),
        ("wall time", f"{summary.wall_seconds:.0f} s" if summary.wall_seconds is not None else "–"),
        ("stopped by", summary.stop_reason or "–"),
    ]
    html_cards = "".join(f'<div class="card">{_e(name)}<b>{_e(value)}</b></div>' for name, value in cards)
    config = best.config if best else {}
    chosen = ", ".join(f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in config.items())
    trial = best.trial if best else None
    return f'<div class="cards">{html_cards}</div>' + (_note(f"best: {trial} — {chosen}") if config else "")


def selection_section(run: Run) -> str:
    """How the exported model was chosen: every candidate's out-of-fold scores, the members and their weights;
    then how calibrated it is on the test photos."""
    selection = run.summary.selection
    reliability = run.metrics.get("calibration") or {}
    calibration = (
        _note(
            f"test photos: expected calibration error {reliability.get('ece', 0):.3f}, log-loss "
            f"{_number(run.metrics.get('log_loss'))}"
        )
        + (_img(plots.reliability_plot(reliability["bins"]), "reliability diagram") if reliability.get("bins") else "")
        if reliability
        else ""
    )
    if selection is None:  # a run written before cross-validated selection: its best trial by validation
        best = run.summary.best
        cards = [
            ("chosen trial", best.trial if best else "–"),
            ("validation accuracy", _percent(best and best.val_accuracy)),
        ]
        html_cards = "".join(f'<div class="card">{_e(name)}<b>{_e(value)}</b></div>' for name, value in cards)
        note = _note(
            "this run predates cross-validated selection: its model is the trial with the best validation accuracy"
        )
        return f'<div class="cards">{html_cards}</div>' + note + calibration
    cv = selection.cv
    estimate = (
        ("held-out estimate (one fold" if cv.folds == 1 else f"cross-validated estimate ({cv.folds} folds")
        + f", {cv.n} photos of train + val): accuracy "
        f"{_percent(cv.accuracy)} (95 % {_interval(cv.accuracy_ci95)}), log-loss {cv.log_loss:.4f}, ECE {cv.ece:.3f}"
        if cv
        else ""
    )
    members = {member.name: member.weight for member in selection.members}
    rows = [
        (c.name, _percent(c.oof_accuracy), _number(c.oof_log_loss), _number(c.temperature, 3), members.get(c.name, ""))
        for c in selection.candidates
    ]
    table = _table(("candidate", "OOF accuracy", "OOF log-loss", "temperature", "weight"), rows, numeric=(1, 2, 3, 4))
    verdict = f"chosen: {selection.chosen}"
    if selection.ensemble_gain is not None:
        verdict += (
            f"; the greedy ensemble changed OOF log-loss by {selection.ensemble_gain:+.4f} "
            f"(bootstrap: not better in {100 * (selection.ensemble_p or 0):.1f} % of resamples; kept when at most 10 %)"
        )
    return _note(estimate) + table + _note(verdict) + _latency_note(selection) + calibration


def _latency_note(selection: SelectionSummary) -> str:
    """The exported model's single-photo latency, and what the ensemble costs against its best single member."""
    if selection.latency_ms_p50 is None:
        return ""
    text = f"single-photo latency of the exported model on this machine: {selection.latency_ms_p50:.0f} ms (p50)"
    if selection.single_latency_ms_p50 is not None:
        text += f"; the best single candidate alone: {selection.single_latency_ms_p50:.0f} ms"
    return _note(text)


def leaderboard_section(run: Run) -> str:
    if not len(run.trials):
        return _note("no trials recorded in this run folder")
    rows = [
        (
            rank + 1,
            trial.name,
            trial.describe(),
            str(trial.status),
            _percent(trial.val_accuracy),
            _percent(trial.val_top5),
            trial.epochs,
            _number(trial.seconds, 3),
        )
        for rank, trial in enumerate(run.trials.trials[:LEADERBOARD_ROWS])
    ]
    headers = ("#", "trial", "configuration", "status", "val top-1", "val top-5", "epochs", "seconds")
    more = _note(f"best {LEADERBOARD_ROWS} of {len(run.trials)} trials") if len(run.trials) > LEADERBOARD_ROWS else ""
    chosen = run.summary.best.trial if run.summary.best else None
    best = next((i for i, row in enumerate(rows) if row[1] == chosen), -1)
    return _table(headers, rows, numeric=(0, 4, 5, 6, 7), best=best) + _note("highlighted: the exported model") + more


def history_section(run: Run) -> str:
    frame = analysis.scored(run.frame)
    if frame.empty:
        return _note("no trial reached a validation accuracy")
    frame = frame.sort_values("finished_at", na_position="first") if "finished_at" in frame else frame
    status = frame["status"].tolist()
    uri = plots.history_plot(list(range(1, len(frame) + 1)), frame[analysis.METRIC].tolist(), status)
    return _img(uri, "validation accuracy per trial in finishing order")


def importance_section(run: Run) -> str:
    importances, method = analysis.parameter_importances(run.frame)
    if not importances:
        return _note(f"no importances: {method}")
    uri = plots.bar_plot(list(importances), list(importances.values()), f"importance ({method})")
    rows = [(name, _number(value, 3)) for name, value in importances.items()]
    explain = _note(
        f"Optuna's {method} on a study rebuilt from the trials; dimensions some trials did not use "
        "(e.g. Adam's epsilon) are weighed only when every trial had them."
    )
    table = _table(("dimension", "importance"), rows, (1,))
    return f'<div class="grid">{_img(uri, "parameter importances")}{table}</div>{explain}'


def dimensions_section(run: Run) -> str:
    names = analysis.dimensions(analysis.scored(run.frame))
    if not names:
        return _note("no search dimension took more than one value")
    parts = []
    for name in names:
        rows = [
            (
                CUT_MEANING.get(row["value"], row["value"]) if name == "cut" else row["value"],
                row["n"],
                _percent(row["best"]),
                _percent(row["median"]),
            )
            for row in analysis.dimension_table(run.frame, name)
        ]
        parts.append(
            f"<div><h3>{_e(name)}</h3>{_table((name, 'trials', 'best val', 'median val'), rows, (1, 2, 3))}</div>"
        )
    return f'<div class="grid">{"".join(parts)}</div>'


def time_section(run: Run) -> str:
    frame = analysis.scored(run.frame)
    if frame.empty or "seconds" not in frame:
        return _note("no trial timings recorded")
    frame = frame[frame["seconds"].notna()]
    heads = frame["param_head"].fillna("?").astype(str).tolist() if "param_head" in frame else ["?"] * len(frame)
    uri = plots.time_plot(frame["seconds"].tolist(), frame[analysis.METRIC].tolist(), heads)
    return _img(uri, "validation accuracy against training time")


def classes_section(run: Run) -> str:
    metrics = run.metrics
    if not metrics.get("per_class"):
        return _note("no test metrics in this run folder (metrics.json)")
    rows = [
        (
            c["label"],
            c["support"],
            _percent(c["accuracy"]),
            _percent(c["top5"]),
            _number(c["precision"], 3),
            _number(c["recall"], 3),
            _number(c["f1"], 3),
            {True: "yes", False: "no", None: "–"}[c["internal"]],
        )
        for c in metrics["per_class"]
    ]
    headers = ("class", "test photos", "top-1", "top-5", "precision", "recall", "F1", "in ImageNet-1k")
    histogram = metrics["histogram"]
    uri = plots.histogram_plot(histogram["edges"], histogram["counts"])
    groups = [
        (name, len(g["classes"]), g["n"], _percent(g["top1"]), _percent(g["top5"]), _percent(g["mean_class_accuracy"]))
        for name in ("internal", "external")
        if (g := metrics.get(name))
    ]
    group_table = (
        _table(("classes", "count", "photos", "top-1", "top-5", "mean class accuracy"), groups, (1, 2, 3, 4, 5))
        if groups
        else _note("no classes marked as ImageNet-1k classes (data.imagenet_classes in the recipe)")
    )
    macro = metrics["macro"]
    macro_note = _note(
        f"macro averages: precision {macro['precision']:.3f}, recall {macro['recall']:.3f}, F1 {macro['f1']:.3f}"
    )
    return (
        _table(headers, rows, (1, 2, 3, 4, 5, 6))
        + macro_note
        + f'<div class="grid">{_img(uri, "histogram of per-class accuracy")}{group_table}</div>'
    )


def confusion_section(run: Run) -> str:
    metrics = run.metrics
    if not metrics.get("confusion"):
        return _note("no test metrics in this run folder (metrics.json)")
    uri = plots.confusion_plot(metrics["confusion"], metrics["labels"])
    rows = [(p["true"], p["predicted"], p["count"], _percent(p["rate"])) for p in metrics["confused_pairs"]]
    pairs = (
        _table(("true", "taken for", "photos", "share of the class"), rows, (2, 3)) if rows else _note("no confusions")
    )
    return f'<div class="grid">{_img(uri, "confusion matrix")}<div><h3>most confused pairs</h3>{pairs}</div></div>'


def _thumbnail(path: str, roots: Sequence[Path]) -> str | None:
    """A small inline JPEG of a photo inside `roots`, or None when it is outside them or cannot be read."""
    from PIL import Image

    from automl.data.files import read_bounded
    from automl.data.images import ImageError, decode_image
    from automl.data.resize import Resize

    try:
        run_root, *datasets = roots
        written = Path(os.path.abspath(path))  # `..` removed, links kept: inside the dataset as the scan saw it
        if not (written.resolve().is_relative_to(run_root) or any(written.is_relative_to(d) for d in datasets)):
            return None
        pixels = decode_image(read_bounded(written), Resize(size=THUMBNAIL_PX, resample="bilinear"))
    except (OSError, ValueError, ImageError):
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def misclassified_section(run: Run) -> str:
    wrong = run.metrics.get("misclassified")
    if wrong is None:
        return _note("no test metrics in this run folder (metrics.json)")
    if not wrong:
        return _note("every test photo was classified correctly")
    figures, unreadable = [], 0
    for item in wrong[:MAX_THUMBNAILS]:
        uri = _thumbnail(str(item["file"]), run.photo_roots)
        if uri is None:
            unreadable += 1
            continue
        caption = f"{item['true']} → {item['predicted']} ({item['score']:.2f})"
        figures.append(
            f'<figure title="{_e(item["file"])}"><img src="{uri}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    notes = f"{len(wrong)} misclassified test photos, most confident first"
    hidden = f" ({unreadable} not shown: unreadable now, or outside the run folder and its dataset)"
    notes += f"; showing {len(figures)}" + (hidden if unreadable else "")
    return _note(notes) + f'<div class="thumbs">{"".join(figures)}</div>'


def runtimes_section(run: Run) -> str:
    runtimes = run.metrics.get("runtimes")
    if not runtimes:
        return _note(
            "no exported runtimes checked: the search's time budget could not pay for the conversions "
            "(`automl evaluate RUN_DIR DATA` converts and checks them)"
        )
    rows = [("Keras (.keras)", _percent(runtimes["keras"]["top1"]), "–", "–", "–", "–")]
    for key, name in (
        ("saved_model", "TF SavedModel"),
        ("tflite", "TFLite float32"),
        ("tflite_int8", "TFLite int8 (dynamic range)"),
    ):
        if key in runtimes:
            r = runtimes[key]
            rows.append(
                (
                    name,
                    _percent(r["top1"]),
                    f"{100 * r['top1_diff']:+.2f} pt",
                    _percent(r["agreement"]),
                    _number(r["max_abs_diff"], 3),
                    f"{r['bytes'] / 2**20:.1f} MB",
                )
            )
    headers = ("runtime", "test top-1", "vs Keras", "same top-1 as Keras", "largest probability difference", "size")
    return _table(headers, rows, (1, 2, 3, 4, 5)) + _note(f"on the {runtimes.get('n', '?')} test photos")


def phases_section(run: Run) -> str:
    phases = run.summary.phases
    if not phases:
        return _note("no phase timings in summary.json")
    total = run.summary.wall_seconds
    rows = [(name, f"{seconds:.1f}", _percent(seconds / total) if total else "–") for name, seconds in phases.items()]
    uri = plots.bar_plot(list(phases), list(phases.values()), "seconds")
    cache = run.summary.cache
    cache_note = (
        _note(f"bottleneck cache: {cache.cache_hits} hits, {cache.cache_misses} computed") if cache is not None else ""
    )
    table = _table(("phase", "seconds", "share"), rows, (1, 2))
    return f'<div class="grid">{_img(uri, "phase timings")}{table}</div>{cache_note}'


def finetune_section(run: Run) -> str:
    """The fine-tuning stage: per backbone its linear probe against LP-FT on the same held-out fold, the contenders
    (the chosen model, LP-FT alone, averaged, blended) and which was exported."""
    stage = run.summary.finetune
    if stage is None or stage.skipped:
        why = stage.skipped if stage else "no fine-tuning stage in summary.json (a search before it existed)"
        return _table(("stage", "why"), [("not run", why)])
    views = "original + flipped photos" if stage.augment else "original photos"
    backbones = [
        (
            f"{ft.backbone} {ft.cut}",
            _percent(ft.lp_accuracy),
            _percent(ft.ft_accuracy) + (" (flip TTA)" if ft.tta else ""),
            ft.epochs,
            f"{ft.seconds:.0f}",
            ("refit on the whole pool" if ft.refit else "fold model (no time for a refit)") if ft.exported else "–",
        )
        for ft in stage.backbones
    ]
    per_backbone = _table(
        ("backbone, cut", "linear probe (LR-CV, out of fold)", "LP-FT", "epochs", "seconds", "exported"),
        backbones,
        (1, 2, 3, 4),
    )
    contenders = _table(
        ("contender", "held-out accuracy", "log-loss"),
        [
            (c.name, _percent(c.accuracy), f"{c.log_loss:.4f}" if c.log_loss is not None else "–")
            for c in stage.contenders
        ],
        (1, 2),
    )
    exported = (
        f"{stage.exported} exported"
        if stage.exported
        else "the selection's model exported (no contender cleared it and every probe by the stage's margin)"
    )
    stopped = f" Fewer backbones than the recipe's: {stage.stopped}." if stage.stopped else ""
    return (
        per_backbone
        + contenders
        + _note(
            f"{stage.held_out} photos of the same held-out fold; LP-FT trained on {views}; the chosen model "
            f"{_percent(stage.chosen_accuracy)}. {exported}.{stopped}"
        )
    )


def machine_section(run: Run) -> str:
    recorded = run.summary.machine
    info: dict[str, Any] = dict(recorded) if recorded else describe_machine()
    where = "the machine that ran the search" if recorded else "the machine that wrote this report"
    rows = [
        ("CPU", info.get("cpu")),
        ("cores", info.get("cores")),
        ("memory", f"{info.get('memory_gib')} GiB"),
        ("OS", info.get("os")),
        ("Python", info.get("python")),
        *((name, version) for name, version in (info.get("libraries") or {}).items()),
    ]
    return _note(where) + _table(("what", "value"), rows)


def audit_section(run: Run) -> str:
    from automl.report.audit_section import render_audit  # imports this module's helpers: import it late

    return render_audit(run)


SECTIONS: tuple[tuple[str, str, Callable[[Run], str]], ...] = (
    ("summary", "Summary", summary_section),
    ("selection", "Model selection (cross-validated) and calibration", selection_section),
    ("leaderboard", "Leaderboard", leaderboard_section),
    ("history", "Optimization history", history_section),
    ("importance", "Parameter importances", importance_section),
    ("dimensions", "Best and median validation accuracy per search dimension", dimensions_section),
    ("time", "Accuracy against time", time_section),
    ("classes", "Per-class accuracy (test)", classes_section),
    ("confusion", "Confusion matrix (test)", confusion_section),
    ("misclassified", "Misclassified test photos", misclassified_section),
    ("audit", "Dataset audit", audit_section),
    ("runtimes", "Exported runtimes", runtimes_section),
    ("finetune", "Linear probe vs fine-tuning", finetune_section),
    ("phases", "Phase timings", phases_section),
    ("machine", "Machine", machine_section),
)
"""(id, heading, builder) of every section, in page order."""


def render_report(run: Run) -> str:
    title = f"automl run {run.summary.recipe or run.root.name}"
    sections = "\n".join(
        f'<section id="{sid}"><h2>{_e(heading)}</h2>{build(run)}</section>' for sid, heading, build in SECTIONS
    )
    nav = "".join(f'<a href="#{sid}">{_e(heading.split(" (")[0])}</a>' for sid, heading, _ in SECTIONS)
    subtitle = f"{run.root} — report written {datetime.now().isoformat(timespec='seconds')}"
    return _PAGE.substitute(title=_e(title), subtitle=_e(subtitle), nav=nav, sections=sections, thumb=THUMBNAIL_PX)


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write `run_dir/report.html` (atomically) from the run folder's files and return its path."""
    from automl.errors import InputError
    from automl.runs import RunFolderError

    folder = RunFolder(Path(run_dir))
    if not folder.root.is_dir():
        raise InputError(f"{folder.root}: not a folder", hint="give the run folder a search printed")
    if not folder.is_run():
        raise InputError(f"{folder.root}: not a run folder (no {folder.recipe.name})", hint="give a folder under runs/")
    try:
        page = render_report(load_run(folder.root))
    except RunFolderError:
        raise
    except Exception as exc:  # missing columns, wrong JSON types the records let through: one clear line
        raise InputError(
            f"{folder.root}: damaged run folder, cannot write its report ({type(exc).__name__}: {str(exc)[:200]})",
            hint="trials.parquet, metrics.json or summary.json was truncated or edited; rerun or resume the search",
        ) from None
    write_atomic(folder.report, page)
    return folder.report
