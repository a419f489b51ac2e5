"""Selection that generalises (issue 13): LR-CV per backbone, calibration, the greedy ensemble, fold heads vs refit.

    python -m benchmarks.selection [--datasets animals10,trashnet] [--seeds 0-5] [--backbones ...]

Warm cache only (pooled `all` vectors of every photo; `automl cache` or a search fills it). For each
dataset and split seed (train/val/test 0.7/0.15/0.15 by hash; the development pool is train + val with
5 hash folds), everything is chosen on out-of-fold (OOF) numbers of the pool and the test split only
scores the result:
- LR-CV per backbone (`automl.selection.oof.fit_logistic_cv`: C by OOF log-loss, refit on the pool); the
  baseline is the backbone with the best OOF log-loss, scored raw and with its OOF-fitted temperature.
- The calibrated greedy ensemble (Caruana, with replacement) over the backbones' temperature-scaled OOF
  probabilities, kept only when the paired bootstrap puts its OOF log-loss gain beyond noise; "exported"
  is the ensemble when kept, else the calibrated baseline.
- Linear heads, "mean of the fold heads" against "refit on the whole pool", by nested CV on the pool
  (each outer fold held out in turn; the inner folds give the fold heads, the inner pool the refit, both
  at the baseline's C) on the baseline backbone.
Writes benchmarks/out/selection.json and the `selection` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import scan_dataset
from automl.metrics import expected_calibration_error, log_loss, reliability_bins
from automl.selection.calibration import fit_temperature, softmax
from automl.selection.ensemble import blend, compare_to_best_single, greedy_selection
from automl.selection.folds import assign_folds, fold_indices
from automl.selection.linear import LinearHead, mean_of_heads
from automl.selection.oof import fit_logistic_cv
from benchmarks import results as results_md

DATA = Path(__file__).resolve().parents[1] / "data"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
K = 5


@dataclass
class Vectors:
    """Every photo of a dataset: sha1, label, and the cached pooled vector per backbone."""

    name: str
    sha1s: list[str]
    labels: np.ndarray
    x: dict[str, np.ndarray]

    def split(self, seed: int) -> np.ndarray:
        """Each photo's split under `seed` (the scan's own hash split; rescans are stat-only)."""
        dataset = scan_dataset(DATA / self.name, train=0.7, val=0.15, test=0.15, seed=seed)
        by_sha1 = {r.sha1: r.split for r in dataset.records}
        return np.array([by_sha1[s] for s in self.sha1s])


def load_vectors(name: str, backbones: tuple[str, ...]) -> Vectors:
    dataset = scan_dataset(DATA / name, train=0.7, val=0.15, test=0.15, seed=0)
    cache = BottleneckCache()
    sha1s = [r.sha1 for r in dataset.records]
    x = {b: cache.load(get_backbone(b), "default", "all", sha1s).reshape(len(sha1s), -1) for b in backbones}
    return Vectors(name, sha1s, np.array([r.label for r in dataset.records]), x)


def scores(y: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    return {
        "top1": float((probabilities.argmax(axis=1) == y).mean()),
        "log_loss": log_loss(y, probabilities),
        "ece": expected_calibration_error(reliability_bins(y, probabilities)),
    }


def fold_mean_vs_refit(x: np.ndarray, y: np.ndarray, folds: np.ndarray, c: float, classes: int) -> dict:
    """Nested CV on the pool: per outer fold, the inner fold heads averaged vs the inner refit, at C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(rows: np.ndarray) -> LinearHead:
        scaler = StandardScaler().fit(x[rows])
        model = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x[rows]), y[rows])
        coef = np.zeros((classes, x.shape[1]))
        intercept = np.full(classes, -30.0)
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
        return LinearHead.from_standardized(coef, intercept, scaler.mean_, scaler.scale_)

    out = {"fold_mean": np.zeros((len(y), classes)), "refit": np.zeros((len(y), classes))}
    for outer, held in fold_indices(folds, K):
        inner_heads = [fit(outer[folds[outer] != j]) for j in range(K) if j in set(folds[outer])]
        out["fold_mean"][held] = softmax(mean_of_heads(inner_heads).logits(x[held]))
        out["refit"][held] = softmax(fit(outer).logits(x[held]))
    return {name: scores(y, p) for name, p in out.items()}


def one_seed(vectors: Vectors, backbones: tuple[str, ...], seed: int, classes: int) -> dict:
    split = vectors.split(seed)
    dev, test = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    y_dev, y_test = vectors.labels[dev], vectors.labels[test]
    folds = assign_folds([vectors.sha1s[i] for i in dev], y_dev, k=K, seed=seed)
    per_backbone, calibrated_oof, calibrated_test = {}, [], []
    for name in backbones:
        lr = fit_logistic_cv(vectors.x[name][dev], y_dev, folds, num_classes=classes)
        temperature = fit_temperature(lr.oof_logits, y_dev)
        test_logits = lr.decision(vectors.x[name][test])
        calibrated_oof.append(softmax(lr.oof_logits, temperature.temperature))
        calibrated_test.append(softmax(test_logits, temperature.temperature))
        per_backbone[name] = {
            "C": lr.best_c,
            "oof": {"log_loss": lr.best.log_loss, "top1": lr.best.accuracy},
            "temperature": temperature.temperature,
            "oof_ece": {"before": temperature.ece_before, "after": temperature.ece_after},
            "test": scores(y_test, softmax(test_logits)),
            "test_calibrated": scores(y_test, calibrated_test[-1]),
            "_lr": lr,
        }
    best = min(backbones, key=lambda b: per_backbone[b]["oof"]["log_loss"])
    selection = greedy_selection(calibrated_oof, y_dev)
    comparison = compare_to_best_single(calibrated_oof, y_dev, selection, seed=seed)
    log_blend_oof = np.log(np.maximum(blend(calibrated_oof, selection.weights), 1e-300))
    blend_temperature = fit_temperature(log_blend_oof, y_dev).temperature
    log_blend_test = np.log(np.maximum(blend(calibrated_test, selection.weights), 1e-300))
    ensemble_test = scores(y_test, softmax(log_blend_test, blend_temperature))
    kept = comparison.ensemble_wins
    nested = fold_mean_vs_refit(vectors.x[best][dev], y_dev, folds, per_backbone[best]["C"], classes)
    for entry in per_backbone.values():
        entry.pop("_lr")
    return {
        "seed": seed,
        "dev": len(dev),
        "test_photos": len(test),
        "backbones": per_backbone,
        "lr_cv": {"backbone": best, **per_backbone[best]["test"]},
        "lr_cv_calibrated": {"backbone": best, **per_backbone[best]["test_calibrated"]},
        "ensemble": {
            "weights": {b: float(w) for b, w in zip(backbones, selection.weights, strict=True) if w > 0},
            "oof_log_loss": selection.log_loss,
            "temperature": blend_temperature,
            "oof_difference": [comparison.difference, comparison.low, comparison.high],
            "share_not_better": comparison.share_not_better,
            "kept": kept,
            "test": ensemble_test,
        },
        "exported": ensemble_test if kept else per_backbone[best]["test_calibrated"],
        "fold_mean_vs_refit": nested,
    }


def summarise(name: str, rows: list[dict]) -> str:
    def mean(path: tuple[str, ...]) -> float:
        values = []
        for row in rows:
            value = row
            for key in path:
                value = value[key]
            values.append(value)
        return float(np.mean(values))

    lines = [
        f"### {name}: {rows[0]['dev']} development + {rows[0]['test_photos']} test photos (seed 0), seeds "
        f"{rows[0]['seed']}-{rows[-1]['seed']}",
        "",
        "| seed | LR-CV backbone | LR-CV top-1 | LR-CV log-loss | LR-CV ECE | calibrated ECE | ensemble weights |"
        " OOF Δ log-loss (95 %) | resamples not better | kept | exported top-1 | exported log-loss | exported ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        e = r["ensemble"]
        weights = ", ".join(f"{b.removeprefix('efficientnet_')} {w:.2f}" for b, w in e["weights"].items())
        d, lo, hi = e["oof_difference"]
        lines.append(
            f"| {r['seed']} | {r['lr_cv']['backbone'].removeprefix('efficientnet_')} | {r['lr_cv']['top1']:.4f} |"
            f" {r['lr_cv']['log_loss']:.4f} | {r['lr_cv']['ece']:.4f} | {r['lr_cv_calibrated']['ece']:.4f} |"
            f" {weights} | {d:+.4f} ({lo:+.4f}, {hi:+.4f}) | {e['share_not_better']:.3f} |"
            f" {'yes' if e['kept'] else 'no'} |"
            f" {r['exported']['top1']:.4f} | {r['exported']['log_loss']:.4f} | {r['exported']['ece']:.4f} |"
        )
    lines += [
        "",
        f"Means: LR-CV top-1 {mean(('lr_cv', 'top1')):.4f}, log-loss {mean(('lr_cv', 'log_loss')):.4f}, ECE"
        f" {mean(('lr_cv', 'ece')):.4f} (calibrated {mean(('lr_cv_calibrated', 'ece')):.4f}); ensemble (always)"
        f" top-1 {mean(('ensemble', 'test', 'top1')):.4f}, log-loss {mean(('ensemble', 'test', 'log_loss')):.4f};"
        f" exported top-1 {mean(('exported', 'top1')):.4f}, log-loss {mean(('exported', 'log_loss')):.4f},"
        f" ECE {mean(('exported', 'ece')):.4f}.",
        f"Linear head on the LR-CV backbone, nested CV on the pool (outer-fold numbers): mean of the fold heads"
        f" log-loss {mean(('fold_mean_vs_refit', 'fold_mean', 'log_loss')):.4f} / top-1"
        f" {mean(('fold_mean_vs_refit', 'fold_mean', 'top1')):.4f}; refit on the pool log-loss"
        f" {mean(('fold_mean_vs_refit', 'refit', 'log_loss')):.4f} / top-1"
        f" {mean(('fold_mean_vs_refit', 'refit', 'top1')):.4f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="animals10,trashnet")
    parser.add_argument("--seeds", default="0-5")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    args = parser.parse_args()
    low, _, high = args.seeds.partition("-")
    seeds = range(int(low), int(high or low) + 1)
    backbones = tuple(args.backbones.split(","))
    started = time.perf_counter()
    results, sections = {}, []
    for name in args.datasets.split(","):
        vectors = load_vectors(name, backbones)
        classes = int(vectors.labels.max()) + 1
        results[name] = [one_seed(vectors, backbones, seed, classes) for seed in seeds]
        sections.append(summarise(name, results[name]))
        print(sections[-1], flush=True)
    summary = (
        "LR-CV = multinomial logistic regression on standardised pooled vectors, C by 5-fold OOF log-loss,"
        " refit on train+val, backbone by OOF log-loss; calibrated = temperature fitted on its OOF logits;"
        " ensemble = Caruana greedy selection (25 rounds, with replacement) over the calibrated LR-CV models of"
        f" {', '.join(backbones)}, the blend recalibrated by one more temperature on its OOF probabilities"
        " (softmax(log p / T)), kept when the paired bootstrap's 95 % interval of its OOF log-loss gain"
        " excludes 0. Test split used for scoring only.\n\n"
        + "\n".join(sections)
        + f"\nTotal {time.perf_counter() - started:.0f} s."
    )
    datasets = "_".join(results)
    title = f"Selection on {', '.join(results)}: LR-CV, calibration, greedy ensemble (issue 13)"
    results_md.publish(f"selection_{datasets}", title, results, summary)


if __name__ == "__main__":
    main()
