"""Learning curves: test accuracy against the number of training photos per class, on cached bottlenecks.

The reference studies' central question: how many photos per class does transfer learning need (3 per
class already gave about 40 % top-1 on 200 new classes; 1,000 gave 65–71 %)? For each number of
"shots", `repeats` random draws of that many training photos per class each fit a fast head (a
multinomial logistic regression, i.e. the softmax head fitted to convergence) on the cached pooled
vectors of the backbone, scored on the whole test split. Nothing passes through the backbone again
once the cache is warm, so a curve takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.errors import InputError
from automl.metrics import top_k_hits

if TYPE_CHECKING:
    from automl.data.dataset import Split

ALL = "all"
HEAD = "logistic_regression"


def parse_shots(text: str) -> list[int | str]:
    """`1,3,10,30,all` → [1, 3, 10, 30, "all"]; anything else is an InputError naming the bad item."""
    shots: list[int | str] = []
    for item in (part.strip() for part in text.split(",")):
        if item == ALL:
            shots.append(ALL)
        elif item.isdigit() and int(item) > 0:
            shots.append(int(item))
        else:
            raise InputError(
                f"--shots: {item!r} is not a positive whole number or 'all'", hint="e.g. --shots 1,3,10,all"
            )
    if not shots:
        raise InputError("--shots: give at least one number of photos per class")
    return shots


@dataclass
class Features:
    """Cached pooled vectors of the train and test splits, with class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def _interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence interval of the mean (Student's t); a single value has a zero-width interval."""
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    half = 0.0
    if len(array) > 1:
        half = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / np.sqrt(len(array)))
    return {"mean": mean, "low": max(0.0, mean - half), "high": min(1.0, mean + half), "values": array.tolist()}


def _draw(y: np.ndarray, shots: int | str, rng: np.random.Generator) -> np.ndarray:
    """Indices of `shots` random training photos per class (every photo of a smaller class; all for `all`)."""
    if shots == ALL:
        return np.arange(len(y))
    chosen = [rng.permutation(np.nonzero(y == c)[0])[: int(shots)] for c in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def _fit_and_score(features: Features, rows: np.ndarray) -> tuple[float, float]:
    """Top-1 and top-5 on the test split of a logistic regression fitted on `rows` of the train split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = len(features.classes)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(features.x_train[rows], features.y_train[rows])
    scores = np.zeros((len(features.y_test), n_classes))
    scores[:, model.classes_] = model.predict_proba(features.x_test)  # a class unseen in training scores 0
    top1 = float((scores.argmax(axis=1) == features.y_test).mean())
    return top1, float(top_k_hits(features.y_test, scores, 5).mean())


def learning_curve(features: Features, shots: Sequence[int | str], repeats: int, seed: int = 0) -> list[dict]:
    """One point per number of shots: top-1/top-5 mean and 95 % interval over `repeats` draws.

    `all` is drawn once: every draw would be the same photos, so repeating it measures nothing.
    """
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    per_class = np.bincount(features.y_train, minlength=len(features.classes))
    points = []
    for shot in shots:
        draws = 1 if shot == ALL else repeats
        clock = time.perf_counter()
        results = []
        for repeat in range(draws):
            rng = np.random.default_rng([seed, repeat, 0 if shot == ALL else int(shot)])
            results.append(_fit_and_score(features, _draw(features.y_train, shot, rng)))
        top1, top5 = zip(*results, strict=True)
        used = per_class if shot == ALL else np.minimum(per_class, int(shot))
        points.append(
            {
                "shots": shot,
                "images_per_class": {"min": int(used.min()), "max": int(used.max())},
                "repeats": draws,
                "top1": _interval(top1),
                "top5": _interval(top5),
                "seconds": round(time.perf_counter() - clock, 3),
            }
        )
    return points


def cached_vectors(
    recipe: Any, backbone_name: str | None = None, splits: Sequence[Split] = ("train", "test")
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict[str, Any]]:
    """Pooled vectors (cut `all`: the frozen backbone, as in the studies' feature-extraction experiments) and
    labels of the recipe's `splits` from the bottleneck cache (computing only what it lacks).

    Returns {split: (x, y)}, the class names and what was used (backbone, weights, cache hits).
    """
    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.data.dataset import Dataset
    from automl.paths import cache_root
    from automl.search.features import POOLED, FeaturePlan

    name = backbone_name or recipe.search.backbones[0]
    backbone = get_backbone(name)
    weights = recipe.search.weights
    dataset = Dataset.from_recipe(recipe.data)
    cache = BottleneckCache(cache_root(recipe.cache))
    plan = FeaturePlan.pooled(name, splits)
    stats = plan.ensure(cache, {name: backbone}, weights, dataset, progress=False)[name]
    failed = {item.path for item in stats.failed}
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in plan.splits:
        chosen = dataset.split(split)
        usable = [r for r in chosen if r.path not in failed]
        if not usable:
            raise InputError(f"{dataset.root}: no readable {split} photos", hint="`automl data check` lists them")
        x = cache.load(backbone, weights, POOLED, [r.sha1 for r in usable])
        vectors[split] = (x.reshape(len(usable), -1), np.array([r.label for r in usable], dtype=np.int64))
    info = {"backbone": name, "weights": weights, "cache_computed": stats.computed, "cache_reused": stats.reused}
    return vectors, list(dataset.classes), info


def plot_curve(points: list[dict], title: str, path: Path) -> Path:
    """Top-1 and top-5 against photos per class (log scale), with the 95 % intervals as bands."""
    from automl.report.plots import new_figure

    figure = new_figure(height=3.6)
    axes = figure.add_subplot()
    x = [p["images_per_class"]["max"] for p in points]
    for metric, colour in (("top1", "#2b6cb0"), ("top5", "#dd6b20")):
        mean = [p[metric]["mean"] for p in points]
        axes.plot(x, mean, marker="o", color=colour, label=metric.replace("top", "top-"))
        axes.fill_between(
            x, [p[metric]["low"] for p in points], [p[metric]["high"] for p in points], color=colour, alpha=0.2
        )
    axes.set_xscale("log")
    axes.set_xticks(x, [str(p["shots"]) if p["shots"] != ALL else f"all ({v})" for p, v in zip(points, x, strict=True)])
    axes.set(xlabel="training photos per class", ylabel="test accuracy", title=title, ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def run_curve(
    recipe: Any, shots: Sequence[int | str], repeats: int, plot: Path, backbone: str | None = None
) -> dict[str, Any]:
    """`automl curve`: features from the cache, the curve, its plot; everything JSON-ready."""
    started = time.perf_counter()
    vectors, classes, info = cached_vectors(recipe, backbone, ("train", "test"))
    features = Features(*vectors["train"], *vectors["test"], classes)
    points = learning_curve(features, shots, repeats, seed=recipe.search.seed)
    title = f"{recipe.name}: {info['backbone']} frozen + {HEAD.replace('_', ' ')}"
    return {
        "recipe": recipe.name,
        **info,
        "head": HEAD,
        "classes": len(features.classes),
        "train_images": len(features.y_train),
        "test_images": len(features.y_test),
        "points": points,
        "plot": str(plot_curve(points, title, plot)),
        "seconds": round(time.perf_counter() - started, 2),
    }
