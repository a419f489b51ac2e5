"""The audit of one dataset from out-of-sample probabilities and pooled vectors, and its JSON and CSV forms.

Label errors are confident learning (Northcutt et al. 2021) through cleanlab, not a copy of it: a photo is flagged
when its given class is improbable for a model that never saw it, relative to how confident that model is on each
class; ranked by self-confidence (the probability of the given class), lowest first. The suggested class is
the model's top class. Near-duplicates, outliers and imbalance come from the vectors (see `neighbours`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.audit.neighbours import (
    NEAR_DUPLICATE_COSINE,
    OUTLIER_MAD,
    OUTLIER_NEIGHBOURS,
    centred_unit_rows,
    isolation,
    pairs_above,
)
from automl.data.dataset import DuplicateGroup

IMBALANCE_RATIO = 3.0
"""Largest over smallest class size above which the audit calls the set imbalanced (accuracy then hides the
small classes: read per-class recall)."""


@dataclass(frozen=True)
class Photo:
    """One audited photo: where it is, its given class (index), split and, in the development pool, its fold."""

    path: Path
    sha1: str
    label: int
    split: str
    fold: int | None = None


@dataclass(frozen=True)
class LabelIssue:
    rank: int
    path: str
    split: str
    given: str
    suggested: str
    score: float
    """Self-confidence: the out-of-sample probability of the given class (low: likely wrong)."""
    suggested_probability: float


@dataclass(frozen=True)
class NearDuplicate:
    a: str
    b: str
    cosine: float
    a_label: str
    b_label: str
    a_split: str
    b_split: str
    leak: str | None
    """`split` (one in test, one in train/val), `fold` (both in the pool, different folds) or None."""

    @property
    def crosses_classes(self) -> bool:
        return self.a_label != self.b_label


@dataclass(frozen=True)
class Outlier:
    path: str
    label: str
    split: str
    similarity: float
    """Centred cosine to the 5th most similar other photo (low: nothing here looks like it)."""
    nearest_class: str
    """The class of the most similar photo."""


@dataclass(frozen=True)
class ExactCopy:
    """The same bytes filed under several classes (`Dataset.duplicates`): every copy is left out of training."""

    paths: list[str]
    classes: list[str]


@dataclass
class Audit:
    root: str
    classes: list[str]
    model: dict[str, Any]
    """Where the probabilities came from (e.g. LR-CV: backbone, C, OOF log-loss and accuracy)."""
    photos: int
    label_issues: list[LabelIssue]
    near_duplicates: list[NearDuplicate]
    outliers: list[Outlier]
    exact_copies: list[ExactCopy]
    class_counts: dict[str, int]
    thresholds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def imbalance_ratio(self) -> float:
        sizes = [n for n in self.class_counts.values() if n]
        return max(sizes) / min(sizes) if sizes else 1.0

    def leaks(self) -> dict[str, int]:
        """Near-duplicate pairs that cross the test split or two folds."""
        return {kind: sum(1 for pair in self.near_duplicates if pair.leak == kind) for kind in ("split", "fold")}

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "classes": self.classes,
            "model": self.model,
            "photos": self.photos,
            "seconds": round(self.seconds, 2),
            "thresholds": self.thresholds,
            "counts": {
                "label_issues": len(self.label_issues),
                "near_duplicates": len(self.near_duplicates),
                "near_duplicates_across_classes": sum(1 for p in self.near_duplicates if p.crosses_classes),
                **{f"leaks_{kind}": n for kind, n in self.leaks().items()},
                "outliers": len(self.outliers),
                "exact_copies_across_classes": len(self.exact_copies),
            },
            "class_counts": self.class_counts,
            "imbalance_ratio": round(self.imbalance_ratio, 3),
            "imbalanced": self.imbalance_ratio > IMBALANCE_RATIO,
            "label_issues": [asdict(item) for item in self.label_issues],
            "near_duplicates": [{**asdict(p), "crosses_classes": p.crosses_classes} for p in self.near_duplicates],
            "outliers": [asdict(item) for item in self.outliers],
            "exact_copies": [asdict(item) for item in self.exact_copies],
        }

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per finding (kind, path, other path, given, suggested, score, split, detail): a to-do list."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(("kind", "path", "other_path", "given", "suggested", "score", "split", "detail"))
            for issue in self.label_issues:
                writer.writerow(
                    ("label_issue", issue.path, "", issue.given, issue.suggested, f"{issue.score:.4f}", issue.split,
                     f"rank {issue.rank}")
                )  # fmt: skip
            for pair in self.near_duplicates:
                detail = f"leak across {pair.leak}" if pair.leak else ""
                writer.writerow(
                    ("near_duplicate", pair.a, pair.b, pair.a_label, pair.b_label, f"{pair.cosine:.4f}",
                     f"{pair.a_split}/{pair.b_split}", detail)
                )  # fmt: skip
            for item in self.outliers:
                writer.writerow(
                    ("outlier", item.path, "", item.label, item.nearest_class, f"{item.similarity:.4f}", item.split,
                     "far from every class")
                )  # fmt: skip
            for copy in self.exact_copies:
                writer.writerow(
                    ("exact_copy_across_classes", copy.paths[0], " | ".join(copy.paths[1:]), copy.classes[0],
                     " | ".join(copy.classes[1:]), "", "", "same bytes in several classes: left out of training")
                )  # fmt: skip
        return target


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of likely label errors, lowest self-confidence first (cleanlab's confident learning)."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    return np.asarray(
        cleanlab_find(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1), dtype=np.int64
    )


def audit_dataset(
    root: str | os.PathLike[str],
    classes: Sequence[str],
    photos: Sequence[Photo],
    features: np.ndarray,
    probabilities: np.ndarray,
    *,
    model: dict[str, Any],
    duplicates: Sequence[DuplicateGroup] = (),
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> Audit:
    """Audit `photos` (their pooled vectors `features`, row for row) from out-of-sample `probabilities`.

    `probabilities` (N, classes): for each photo, the prediction of a model that never trained on it (OOF in the
    development pool, the pool's refit for test photos); rows of NaN are not judged for label errors.
    `duplicates`: the scan's exact-duplicate groups; those crossing classes are reported as they are.
    """
    names = list(classes)
    labels = np.array([photo.label for photo in photos], dtype=np.int64)
    judged = np.flatnonzero(~np.isnan(probabilities).any(axis=1))
    issues = []
    if len(judged):
        ranked = judged[find_label_issues(labels[judged], probabilities[judged])]
        for rank, row in enumerate(ranked.tolist(), start=1):
            suggested = int(np.argmax(probabilities[row]))
            issues.append(
                LabelIssue(
                    rank,
                    str(photos[row].path),
                    photos[row].split,
                    names[labels[row]],
                    names[suggested],
                    float(probabilities[row, labels[row]]),
                    float(probabilities[row, suggested]),
                )
            )

    unit = centred_unit_rows(features)
    pairs = sorted(pairs_above(unit, threshold), key=lambda pair: -pair[2])
    near = [_near_duplicate(photos[i], photos[j], cosine, names) for i, j, cosine in pairs]

    alone = isolation(unit)
    outliers = [
        Outlier(
            str(photos[row].path),
            names[labels[row]],
            photos[row].split,
            float(alone.similarity[row]),
            names[labels[alone.nearest[row]]],
        )
        for row in np.argsort(alone.similarity)
        if alone.outlier[row]
    ]
    copies = [
        ExactCopy([str(path) for path in group.paths], list(group.classes))
        for group in duplicates
        if group.crosses_classes
    ]
    counts = {name: int((labels == index).sum()) for index, name in enumerate(names)}
    return Audit(
        root=str(root),
        classes=names,
        model=model,
        photos=len(photos),
        label_issues=issues,
        near_duplicates=near,
        outliers=outliers,
        exact_copies=copies,
        class_counts=counts,
        thresholds={
            "near_duplicate_cosine": threshold,
            "outlier_mad": OUTLIER_MAD,
            "outlier_neighbours": OUTLIER_NEIGHBOURS,
            "outlier_similarity": round(alone.cutoff, 4),
            "imbalance_ratio": IMBALANCE_RATIO,
        },
    )


def _near_duplicate(a: Photo, b: Photo, cosine: float, names: list[str]) -> NearDuplicate:
    leak = None
    if (a.split == "test") != (b.split == "test"):
        leak = "split"
    elif a.fold is not None and b.fold is not None and a.fold != b.fold:
        leak = "fold"
    return NearDuplicate(
        str(a.path), str(b.path), round(cosine, 4), names[a.label], names[b.label], a.split, b.split, leak
    )
