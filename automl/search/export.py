"""The search's last phase: the chosen model (`automl.search.selection.Choice`: one candidate or a weighted
ensemble) assembled into one Keras model, saved atomically, tested on the test photos, and timed.

Its members are what the selection scored out of fold, refitted on the whole development pool (LR-CV's and an
MLP's refit, linear trial heads averaged over their folds, a fine-tuned model refit when time allowed): the
test split is read here for the first time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automl.atomic import write_atomic
from automl.runs.records import TestMetrics

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset
    from automl.recipe import Recipe
    from automl.runs.folder import RunFolder
    from automl.search.selection import Choice


def export_choice(
    recipe: Recipe,
    dataset: Dataset,
    backbones: dict[str, Backbone],
    choice: Choice,
    folder: RunFolder,
    *,
    test: bool = True,
    runtimes: bool = True,
) -> TestMetrics | None:
    """Assemble the chosen model (one member or a weighted ensemble), save it atomically in `folder.model`
    and, with `test`, evaluate it on the test split (None without: a provisional model is not tested),
    with `runtimes` also converting and checking SavedModel, TFLite and OpenVINO (`evaluate_run`)."""
    from automl.evaluate import evaluate_run
    from automl.exported import ExportedModel
    from automl.search.selection import assemble_choice

    weights = recipe.search.weights
    model, resize = assemble_choice(choice, backbones, weights, dataset.classes)
    members = [
        {
            "name": candidate.name,
            "backbone": candidate.backbone,
            "weights_id": backbones[candidate.backbone].weights_id(weights),
            "cut": candidate.cut,
            "weight": weight,
            "temperature": candidate.temperature.temperature,
            **candidate.details,
        }
        for candidate, weight in choice.members
    ]
    first = choice.members[0][0]
    estimate = choice.estimate()
    meta = {
        "backbone": first.backbone if not choice.is_ensemble else "+".join(m["backbone"] for m in members),
        "weights": weights,
        "members": members,
        "config": {"backbone": first.backbone, "cut": first.cut, **first.details},
        "trial": choice.name,
        "val_accuracy": estimate["accuracy"],
        "cv": estimate,
        "recipe": recipe.name,
        "data": json.loads(recipe.data.model_dump_json()),
    }
    ExportedModel.save(folder.model, model, dataset.classes, resize, meta)
    write_atomic(folder.labels, json.dumps(list(dataset.classes), indent=2))
    if not test:
        return None
    metrics = evaluate_run(
        folder.root,
        [(record.path, dataset.classes[record.label]) for record in dataset.split("test")],
        internal_classes=recipe.data.imagenet_classes,
        extra={"val_accuracy": estimate["accuracy"], "best_trial": choice.name},
        runtimes=runtimes,
    )
    return TestMetrics.model_validate(metrics)


LATENCY_RUNS = 20


def measure_latency(
    recipe: Recipe, dataset: Dataset, backbones: dict[str, Backbone], choice: Choice, folder: RunFolder
) -> tuple[float, float | None]:
    """Single-photo p50 (ms) of the exported model and, when it is an ensemble, of the best single candidate
    (assembled the same way in a temporary folder): the price of the ensemble, for the summary and report."""
    import tempfile

    from automl.bench import single_photo_latency
    from automl.exported import ExportedModel
    from automl.search.selection import Choice, assemble_choice

    photo = dataset.split("test")[0].path if dataset.split("test") else dataset.records[0].path
    exported = ExportedModel.load(folder.model)
    _, pixels, _ = exported.decode_files([photo])
    latency = single_photo_latency(exported, pixels[0], LATENCY_RUNS)["p50"]
    if not choice.is_ensemble:
        return latency, None
    best = Choice(choice.candidates[:1], np.ones(1), choice.y, choice.folds)
    model, resize = assemble_choice(best, backbones, recipe.search.weights, dataset.classes)
    with tempfile.TemporaryDirectory(prefix="automl-latency-") as scratch:
        single_folder = Path(scratch) / "model"
        ExportedModel.save(single_folder, model, dataset.classes, resize, {"backbone": best.candidates[0].backbone})
        single = ExportedModel.load(single_folder)
        _, pixels, _ = single.decode_files([photo])
        return latency, single_photo_latency(single, pixels[0], LATENCY_RUNS)["p50"]
