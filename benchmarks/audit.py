"""Dataset audit: the thresholds' evidence, near-duplicates across splits, what grouping them does to the test score.

    python -m benchmarks.audit [--datasets animals10,natural_images,trashnet] [--seeds 0,1,2] [--sample 120]

On EfficientNet-Lite0 pooled vectors (cut `all`) of the shared sets, warm cache:
1. near-duplicate threshold: the centred cosine between a photo and its own copy re-encoded (JPEG quality 60),
   resized to 60 % or centre-cropped to 85 % (the copies are written to a temporary folder and extracted into a
   temporary cache, then deleted), against each photo's most similar photo of ANOTHER class (never the same
   picture, so the level distinct photos reach);
2. outlier rule: the share of one set's photos flagged as outliers among another set's photos (they are photos
   of nothing here) against the share of the set's own photos;
3. near-duplicate pairs (cosine >= the threshold) per set, and those across the test split (leakage) on seed 0;
4. LR-CV test top-1 with the plain hash split and with near-duplicate groups kept in one split (and fold), over
   the split seeds: a leak shows as a higher score without grouping.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np

from automl.audit.grouping import near_duplicate_groups, pooled_vectors
from automl.audit.neighbours import (
    NEAR_DUPLICATE_COSINE,
    OUTLIER_MAD,
    OUTLIER_NEIGHBOURS,
    centred_unit_rows,
    isolation,
    knn_similarity,
    pairs_above,
)
from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import ImageRecord, scan_dataset
from automl.machine import describe
from automl.selection.folds import assign_folds
from automl.selection.oof import fit_logistic_cv
from benchmarks import results as results_md

DATA = Path(__file__).resolve().parents[1] / "data"
BACKBONE, WEIGHTS = "efficientnet_lite0", "default"


def _scan(name: str, seed: int = 0, groups: dict[str, str] | None = None):  # -> Dataset
    return scan_dataset(DATA / name, train=0.7, val=0.15, test=0.15, seed=seed, groups=groups)


def _copies(records: list[ImageRecord], folder: Path) -> dict[str, list[ImageRecord]]:
    """Re-encoded, resized and cropped copies of `records`' photos, as records keyed by a hash of their bytes."""
    import hashlib

    from PIL import Image

    def save(image: Image.Image, target: Path) -> str:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=60 if target.parent.name == "jpeg60" else 90)
        target.write_bytes(buffer.getvalue())
        return hashlib.sha1(buffer.getvalue()).hexdigest()

    out: dict[str, list[ImageRecord]] = {"jpeg60": [], "resize60": [], "crop85": []}
    for kind in out:
        (folder / kind).mkdir(parents=True)
    for index, record in enumerate(records):
        with Image.open(record.path) as opened:
            image = opened.convert("RGB")
        w, h = image.size
        variants = {
            "jpeg60": image,
            "resize60": image.resize((max(1, round(w * 0.6)), max(1, round(h * 0.6))), Image.Resampling.BICUBIC),
            "crop85": image.crop((round(w * 0.075), round(h * 0.075), round(w * 0.925), round(h * 0.925))),
        }
        for kind, variant in variants.items():
            target = folder / kind / f"{index:05d}.jpg"
            out[kind].append(ImageRecord(target, save(variant, target), record.label, record.split))
    return out


def _percentiles(values: np.ndarray, points: tuple[float, ...]) -> dict[str, float]:
    return {f"p{p:g}": round(float(np.percentile(values, p)), 3) for p in points}


def threshold_evidence(name: str, sample: int, cache: BottleneckCache) -> dict:
    backbone = get_backbone(BACKBONE)
    dataset = _scan(name)
    x, kept = pooled_vectors(cache, backbone, WEIGHTS, dataset.records)
    mean = x.mean(axis=0)
    unit = centred_unit_rows(x, mean)
    labels = np.array([r.label for r in kept])
    chosen = np.random.default_rng(0).choice(len(kept), size=min(sample, len(kept)), replace=False)
    copies = {}
    with tempfile.TemporaryDirectory(prefix="automl-audit-bench-") as folder:
        made = _copies([kept[i] for i in chosen], Path(folder) / "copies")
        temporary = BottleneckCache(Path(folder) / "cache")
        for kind, records in made.items():
            y, _ = pooled_vectors(temporary, backbone, WEIGHTS, records)
            cosine = (centred_unit_rows(y, mean) * unit[chosen]).sum(axis=1)
            origin = np.zeros_like(mean)
            raw = (centred_unit_rows(y, origin) * centred_unit_rows(x[chosen], origin)).sum(axis=1)
            copies[kind] = {"centred": _percentiles(cosine, (1, 5, 50)), "raw": _percentiles(raw, (1, 5, 50))}
    other = np.zeros(len(kept), dtype=np.float32)
    raw_other = np.zeros(len(kept), dtype=np.float32)
    raw_unit = centred_unit_rows(x, np.zeros_like(mean))
    for label in np.unique(labels):
        rows = labels == label
        # the nearest photo of another class: mask this class's rows out of the candidates
        candidates = np.flatnonzero(~rows)
        other[rows] = (unit[rows] @ unit[candidates].T).max(axis=1)
        raw_other[rows] = (raw_unit[rows] @ raw_unit[candidates].T).max(axis=1)
    same_best, _ = knn_similarity(unit, unit, 1, same=True)
    return {
        "dataset": name,
        "photos": len(kept),
        "copies": copies,
        "nearest_other_class": {
            "centred": _percentiles(other, (50, 99, 99.9, 100)),
            "raw": _percentiles(raw_other, (50, 99, 99.9, 100)),
        },
        "above_threshold": {
            "other_class": int((other >= NEAR_DUPLICATE_COSINE).sum()),
            "any_photo": int((same_best >= NEAR_DUPLICATE_COSINE).sum()),
        },
    }


def outlier_evidence(own: str, intruder: str, sample: int, cache: BottleneckCache) -> dict:
    """Photos of another set scored against this set's photos only: outliers are few and scattered in real folders,
    so they never neighbour each other (100 intruders added at once would)."""
    backbone = get_backbone(BACKBONE)
    x, _ = pooled_vectors(cache, backbone, WEIGHTS, _scan(own).records)
    z, _ = pooled_vectors(cache, backbone, WEIGHTS, _scan(intruder).records)
    z = z[np.random.default_rng(0).choice(len(z), size=min(sample, len(z)), replace=False)]
    mean = x.mean(axis=0)
    unit, intruders = centred_unit_rows(x, mean), centred_unit_rows(z, mean)
    alone = isolation(unit)
    theirs, _ = knn_similarity(intruders, unit, OUTLIER_NEIGHBOURS)
    return {
        "own": own,
        "intruders": f"{len(z)} {intruder} photos",
        "own_flagged": round(float(alone.outlier.mean()), 4),
        "intruders_flagged": round(float((theirs < alone.cutoff).mean()), 4),
    }


def leakage(name: str, seeds: list[int], cache: BottleneckCache) -> dict:
    backbone = get_backbone(BACKBONE)
    x, kept = pooled_vectors(cache, backbone, WEIGHTS, _scan(name).records)
    sha1s = [r.sha1 for r in kept]
    vectors = dict(zip(sha1s, x, strict=True))
    pairs = pairs_above(centred_unit_rows(x), NEAR_DUPLICATE_COSINE)
    groups = near_duplicate_groups(sha1s, x, NEAR_DUPLICATE_COSINE)
    row = {"dataset": name, "photos": len(kept), "near_duplicate_pairs": len(pairs),
           "photos_in_groups": len(groups), "groups": len(set(groups.values()))}  # fmt: skip
    runs = []
    for seed in seeds:
        scores = {}
        for grouped in (False, True):
            dataset = _scan(name, seed, groups if grouped else None)
            split = {r.sha1: r.split for r in dataset.records}
            if not grouped:
                scores["pairs_across_test"] = sum(
                    (split[sha1s[i]] == "test") != (split[sha1s[j]] == "test") for i, j, _ in pairs
                )
            pool = [r for r in dataset.records if r.split != "test" and r.sha1 in vectors]
            test = [r for r in dataset.records if r.split == "test" and r.sha1 in vectors]
            y = np.array([r.label for r in pool])
            folds = assign_folds([dataset.group_key(r.sha1) for r in pool], y.tolist(), seed=seed)
            x_pool = np.stack([vectors[r.sha1] for r in pool])
            result = fit_logistic_cv(x_pool, y, folds, num_classes=len(dataset.classes))
            predicted = result.predict_proba(np.stack([vectors[r.sha1] for r in test])).argmax(axis=1)
            hits = int((predicted == np.array([r.label for r in test])).sum())
            key = "grouped" if grouped else "hash"
            scores[f"{key}_test_top1"] = round(hits / len(test), 4)
            scores[f"{key}_test_photos"] = len(test)
            scores[f"{key}_oof_top1"] = round(result.best.accuracy, 4)
        runs.append({"seed": seed, **scores})
        print(name, runs[-1], flush=True)
    row["seeds"] = runs
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="animals10,natural_images,trashnet")
    parser.add_argument("--leak-datasets", default="animals10,natural_images")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sample", type=int, default=120)
    args = parser.parse_args()
    cache = BottleneckCache()
    names = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    thresholds = [threshold_evidence(name, args.sample, cache) for name in names]
    for item in thresholds:
        print(item, flush=True)
    outliers = [
        outlier_evidence(own, intruder, args.sample, cache)
        for own, intruder in (
            ("animals10", "trashnet"),
            ("trashnet", "animals10"),
            ("natural_images", "trashnet"),
            ("trashnet", "natural_images"),
        )
        if own in names and intruder in names
    ]
    print(outliers, flush=True)
    leaks = [leakage(name, seeds, cache) for name in args.leak_datasets.split(",")]
    results = {"machine": describe(), "backbone": BACKBONE, "threshold": NEAR_DUPLICATE_COSINE,
               "thresholds": thresholds, "outliers": outliers, "leakage": leaks}  # fmt: skip
    results_md.publish("audit", "Dataset audit: thresholds, near-duplicates across splits, grouping", results,
                       summarise(results))  # fmt: skip


def summarise(results: dict) -> str:
    threshold = results["threshold"]
    copy_rows = [
        {
            "set": item["dataset"],
            **{f"{kind} p5 (p1)": f"{v['centred']['p5']} ({v['centred']['p1']})" for kind, v in item["copies"].items()},
            "other class p99 / p99.9 / max": " / ".join(
                str(item["nearest_other_class"]["centred"][p]) for p in ("p99", "p99.9", "p100")
            ),
            "raw cosine: crop85 p5, other class p99.9": f"{item['copies']['crop85']['raw']['p5']}, "
            f"{item['nearest_other_class']['raw']['p99.9']}",
        }
        for item in results["thresholds"]
    ]
    leak_rows = []
    for item in results["leakage"]:
        for run in item["seeds"]:
            leak_rows.append(
                {
                    "set": item["dataset"],
                    "seed": run["seed"],
                    "pairs across test": run["pairs_across_test"],
                    "test top-1 hash split": f"{run['hash_test_top1']:.4f} ({run['hash_test_photos']})",
                    "test top-1 grouped": f"{run['grouped_test_top1']:.4f} ({run['grouped_test_photos']})",
                    "OOF top-1 hash / grouped": f"{run['hash_oof_top1']:.4f} / {run['grouped_oof_top1']:.4f}",
                }
            )
    means = {
        item["dataset"]: (
            np.mean([r["hash_test_top1"] for r in item["seeds"]]),
            np.mean([r["grouped_test_top1"] for r in item["seeds"]]),
        )
        for item in results["leakage"]
    }
    pairs = ", ".join(
        f"{i['dataset']} {i['near_duplicate_pairs']} pairs ({i['photos_in_groups']} photos in {i['groups']} groups "
        f"of {i['photos']})"
        for i in results["leakage"]
    )
    return "\n".join(
        [
            f"EfficientNet-Lite0 pooled vectors, centred cosine. Near-duplicate threshold {threshold}: a photo's "
            "copy (JPEG q60 / resized to 60 % / centre crop 85 %) against the nearest photo of another class:",
            "",
            results_md.table(copy_rows),
            "",
            f"Outlier rule (cosine to the {OUTLIER_NEIGHBOURS}th most similar photo more than {OUTLIER_MAD} robust SD "
            "below the set's median; photos of another set scored against the set's own photos): "
            + "; ".join(
                f"{o['own']}: own photos flagged {100 * o['own_flagged']:.1f} %, {o['intruders']} flagged "
                f"{100 * o['intruders_flagged']:.1f} %"
                for o in results["outliers"]
            ),
            "",
            f"Near-duplicates (cosine >= {threshold}): {pairs}. LR-CV (C by 5-fold CV on train+val, refit) test "
            "top-1, plain hash split against near-duplicate groups kept in one split and fold (test photo count in "
            "brackets):",
            "",
            results_md.table(leak_rows),
            "",
            "Mean test top-1 hash / grouped: "
            + ", ".join(f"{name} {hash_:.4f} / {grouped:.4f}" for name, (hash_, grouped) in means.items()),
            "",
            "Grouped minus hash, points per seed (one test photo in points): "
            + "; ".join(
                f"{item['dataset']} "
                + ", ".join(
                    f"{100 * (r['grouped_test_top1'] - r['hash_test_top1']):+.2f} ({100 / r['hash_test_photos']:.2f})"
                    for r in item["seeds"]
                )
                for item in results["leakage"]
            )
            + ". Differences of a photo or two either way: on these sets the near-copies across the test split "
            "barely inflate a linear head's test score; "
            "grouping is cheap insurance for folders with more copies, not a correction measured here.",
        ]
    )


if __name__ == "__main__":
    main()
