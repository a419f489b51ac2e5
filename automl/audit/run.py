"""The audit of a recipe's dataset end to end (`automl data audit RECIPE`) and of a finished run (`audit_run`).

Probabilities: either given (the search's own out-of-fold probabilities of its exported model, by SHA-1), or
LR-CV (`automl.selection.oof`) on each backbone of the recipe, keeping the backbone of the lowest OOF log-loss.
Every photo is judged by a model that never trained on it: development-pool photos by their OOF prediction,
test photos by the refit on the whole pool (which never sees the test split).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.audit.findings import Audit, Photo, audit_dataset
from automl.audit.grouping import dataset_for_recipe, pooled_vectors
from automl.errors import InputError
from automl.selection.folds import DEFAULT_FOLDS, assign_folds
from automl.selection.oof import fit_logistic_cv

if TYPE_CHECKING:
    from automl.recipe import Recipe
    from automl.runs import RunFolder

log = logging.getLogger(__name__)


def audit_recipe(
    recipe: Recipe,
    *,
    backbones: Sequence[str] | None = None,
    probabilities: Mapping[str, Sequence[float]] | None = None,
    progress: bool = False,
    deadline: float | None = None,
) -> Audit:
    """Audit the recipe's dataset (see the module docstring); `deadline`: when extracting missing features must
    stop (`pooled_vectors`).

    `backbones`: which backbones' vectors to consider (default: the recipe's); `probabilities`: {sha1: class
    probabilities} from a model that never trained on each photo (e.g. the search's OOF); then LR-CV is skipped,
    photos without an entry are not judged for label errors, and the first backbone gives the vectors.
    """
    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.paths import cache_root

    started = time.perf_counter()
    cache = BottleneckCache(cache_root(recipe.cache))
    dataset = dataset_for_recipe(recipe, cache=cache, progress=progress)
    names = list(backbones or recipe.search.backbones)
    if probabilities is not None:
        names = names[:1]
    k = int(getattr(recipe.search, "folds", DEFAULT_FOLDS))
    classes = len(dataset.classes)
    candidates: list[tuple[float, np.ndarray, list[Photo], np.ndarray, dict[str, Any]]] = []
    for name in names:
        x, kept = pooled_vectors(
            cache, get_backbone(name), recipe.search.weights, dataset.records, progress=progress, deadline=deadline
        )
        pool = np.array([record.split != "test" for record in kept])
        labels = np.array([record.label for record in kept], dtype=np.int64)
        keys = [dataset.group_key(record.sha1) for record in kept if record.split != "test"]
        folds = assign_folds(keys, labels[pool].tolist(), k=k, seed=recipe.search.seed)
        fold_of = dict(zip(np.flatnonzero(pool).tolist(), folds.tolist(), strict=True))
        photos = [Photo(r.path, r.sha1, r.label, r.split, fold_of.get(i)) for i, r in enumerate(kept)]
        if probabilities is not None:
            scores = _given(probabilities, kept, classes)
            judged = int((~np.isnan(scores).any(axis=1)).sum())
            candidates.append((0.0, x, photos, scores, {"source": "given", "backbone": name, "judged": judged}))
            continue
        result = fit_logistic_cv(x[pool], labels[pool], folds, num_classes=classes)
        scores = np.empty((len(kept), classes))
        scores[pool] = result.oof_probabilities
        if (~pool).any():
            scores[~pool] = result.predict_proba(x[~pool])
        model = {
            "source": "LR-CV",
            "backbone": name,
            "c": result.best_c,
            "folds": k,
            "oof_log_loss": round(result.best.log_loss, 4),
            "oof_accuracy": round(result.best.accuracy, 4),
        }
        candidates.append((result.best.log_loss, x, photos, scores, model))
    _, x, photos, scores, model = min(candidates, key=lambda candidate: candidate[0])
    if probabilities is None:
        model["oof_log_loss_by_backbone"] = {n: round(c[0], 4) for n, c in zip(names, candidates, strict=True)}
    audit = audit_dataset(dataset.root, dataset.classes, photos, x, scores, model=model, duplicates=dataset.duplicates)
    audit.seconds = time.perf_counter() - started
    return audit


def _given(probabilities: Mapping[str, Sequence[float]], records: Sequence[Any], classes: int) -> np.ndarray:
    scores = np.full((len(records), classes), np.nan)
    for row, record in enumerate(records):
        value = probabilities.get(record.sha1)
        if value is not None:
            if len(value) != classes:
                raise InputError(f"probabilities of {record.path} have {len(value)} classes, the dataset {classes}")
            scores[row] = value
    return scores


def audit_run(
    run_dir: str | os.PathLike[str],
    *,
    probabilities: Mapping[str, Sequence[float]] | None = None,
    backbone: str | None = None,
    deadline: float | None = None,
) -> Path:
    """Audit a run folder's dataset and write `run_dir/audit.json` (the report shows it); returns its path.

    Called at the end of a search: a failure here must not cost the user the model already exported, so any
    error is logged and written into audit.json as `{"error": ...}` (the report then says the audit failed).
    The backbone is `backbone`, else the exported model's (summary.json), else the recipe's first.
    """
    from automl.atomic import write_atomic
    from automl.recipe import load_recipe
    from automl.runs import RunFolder

    folder = RunFolder(Path(run_dir))
    root, target = folder.root, folder.audit
    try:
        recipe = load_recipe(folder.recipe)
        chosen = backbone or _run_backbone(folder) or recipe.search.backbones[0]
        payload = audit_recipe(recipe, backbones=[chosen], probabilities=probabilities, deadline=deadline).to_json()
    except Exception as exc:  # the audit is an addition, never a reason to fail (see the docstring)
        log.warning("dataset audit of %s failed: %s", root, exc)
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    write_atomic(target, json.dumps(payload, indent=1, ensure_ascii=False))
    return target


def _run_backbone(folder: RunFolder) -> str | None:
    """The exported model's backbone, as summary.json records it (None before the search has finished)."""
    from automl.runs import RunFolderError, Summary

    try:
        best = Summary.read(folder.summary).best if folder.is_finished() else None
    except RunFolderError:
        return None
    backbone = best.config.get("backbone") if best else None
    return backbone if isinstance(backbone, str) else None
