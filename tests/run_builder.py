"""A real run folder for the tests of the exported model, evaluation and report, built in seconds.

A pretrained backbone (EfficientNet-Lite0 with its bundled ImageNet weights when its plugin is
installed; otherwise MobileNetV2 with seeded random weights) plus a logistic-regression softmax head
fitted on a capped animals10 subset, saved with `ExportedModel.save` and evaluated on the test split
with `evaluate_run` — the same calls the search makes at its end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from automl.backbones.registry import load_backbones
from automl.data.dataset import scan_dataset
from automl.data.images import decode_image
from automl.evaluate import evaluate_run
from automl.exported import ExportedModel
from automl.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 30
"""Photos per class: about 4 test photos per class, enough for every metric to mean something."""
PREFERRED_BACKBONES = (("efficientnet_lite0", "default"), ("mobilenet_v2", "none"))


def pick_backbone():
    """The first preferred backbone that is registered, with weights available offline."""
    registry = load_backbones()
    for name, weights in PREFERRED_BACKBONES:
        if name in registry.names() and registry.get(name).weights_offline(weights):
            return registry.get(name), weights
    raise RuntimeError(f"none of {PREFERRED_BACKBONES} is registered")


def build_run(run: Path, animals10: Path) -> Path:
    """Write `run/model/` and `run/metrics.json` (recipe split, imagenet_classes from recipes/animals10.yaml)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    data = load_recipe(REPO / "recipes" / "animals10.yaml").data
    split = {"train": data.train, "val": data.val, "test": data.test, "seed": data.seed}
    dataset = scan_dataset(animals10, **split, max_per_class=PER_CLASS)
    backbone, weights = pick_backbone()
    base = backbone.build(weights)
    train = dataset.split("train")
    pixels = np.stack([decode_image(record.path.read_bytes(), backbone.resize) for record in train])
    features = base.predict(pixels.astype(np.float32), batch_size=32, verbose=0)
    head = LogisticRegression(C=1.0, max_iter=2000).fit(features, [record.label for record in train])

    dense = keras.layers.Dense(len(dataset.classes), activation="softmax", name="head")
    model = keras.Model(base.input, dense(base.output), name="classifier")
    dense.set_weights([head.coef_.T.astype(np.float32), head.intercept_.astype(np.float32)])
    meta = {
        "backbone": backbone.name,
        "weights": weights,
        "data": {
            **split,
            "folder": str(animals10),
            "max_per_class": PER_CLASS,
            "imagenet_classes": data.imagenet_classes,
        },
    }
    ExportedModel.save(run / "model", model, dataset.classes, backbone.resize, meta)
    test_files = [(record.path, dataset.classes[record.label]) for record in dataset.split("test")]
    evaluate_run(run, test_files, internal_classes=data.imagenet_classes, extra={"backbone": backbone.name})
    return run
