"""automl.export.ensemble on real animals10 photos: EfficientNet-Lite0 + Lite1 with linear heads from scikit-learn.

The exported ensemble must give the weighted average of its members' calibrated probabilities (then its
own blend temperature) after a save and a safe-mode load, with each Lite0 forward pass shared by the heads on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from automl.selection.linear import LinearHead

WEIGHTS = "default"
LITE0, LITE1 = "efficientnet_lite0", "efficientnet_lite1"


@dataclass
class Fitted:
    classes: list[str]
    train_files: list[Path]
    test_files: list[Path]
    features: dict[str, dict[str, np.ndarray]]
    """{backbone: {"train"|"test": cached pooled vectors}}"""
    y_train: np.ndarray
    models: dict[tuple[str, float], object]
    """(backbone, C) -> (scaler, LogisticRegression)"""

    def head(self, backbone: str, c: float) -> LinearHead:
        scaler, model = self.models[(backbone, c)]
        return LinearHead.from_standardized(model.coef_, model.intercept_, scaler.mean_, scaler.scale_)


@pytest.fixture(scope="module")
def fitted(animals10: Path) -> Fitted:
    """40 training and 20 test photos; logistic regressions on their cached Lite0 and Lite1 vectors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from automl.backbones.registry import get_backbone
    from automl.cache import BottleneckCache
    from automl.data.dataset import scan_dataset

    dataset = scan_dataset(animals10, train=0.6, val=0.05, test=0.35, seed=0, max_per_class=6)
    splits = {"train": dataset.split("train"), "test": dataset.split("test")}
    cache = BottleneckCache()
    features = {}
    for name in (LITE0, LITE1):
        backbone = get_backbone(name)
        cache.ensure(backbone, WEIGHTS, ["all"], [r for rs in splits.values() for r in rs], progress=False)
        features[name] = cache.load_splits(
            backbone, WEIGHTS, "all", {s: [r.sha1 for r in rs] for s, rs in splits.items()}
        )
    y_train = np.array([r.label for r in splits["train"]])
    models = {}
    for name in (LITE0, LITE1):
        for c in (1.0, 0.01):
            scaler = StandardScaler().fit(features[name]["train"])
            models[(name, c)] = (
                scaler,
                LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(features[name]["train"]), y_train),
            )
    files = {s: [r.path for r in rs] for s, rs in splits.items()}
    return Fitted(dataset.classes, files["train"], files["test"], features, y_train, models)


def test_linear_head_reproduces_scikit_learn_on_cached_features(fitted: Fitted) -> None:
    import keras

    from automl.export.ensemble import linear_network

    scaler, model = fitted.models[(LITE0, 1.0)]
    x = fitted.features[LITE0]["test"]
    network = linear_network(fitted.head(LITE0, 1.0), "lr")
    probabilities = np.asarray(keras.ops.softmax(network(x.astype(np.float32))))
    np.testing.assert_allclose(probabilities, model.predict_proba(scaler.transform(x)), atol=1e-5)


def _sharpened(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the ensemble's own recalibration of its blend."""
    logits = np.log(probabilities) / temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _alone(member, files: list[Path], labels: list[str], folder: Path) -> np.ndarray:
    """The member exported on its own (its own resize), saved, loaded in safe mode, on `files`."""
    from automl.export.ensemble import assemble_ensemble
    from automl.exported import ExportedModel

    model, resize = assemble_ensemble([member], labels)
    assert resize == member.backbone.resize
    ExportedModel.save(folder, model, labels, resize)
    loaded = ExportedModel.load(folder)
    _, images, errors = loaded.decode_files(files)
    assert not errors
    return loaded.predict_arrays(images)


def test_exported_ensemble_is_the_weighted_average_of_its_calibrated_members(fitted: Fitted, tmp_path: Path) -> None:
    from automl.backbones.registry import get_backbone
    from automl.export.ensemble import Member, assemble_ensemble
    from automl.export.layers import CropResize
    from automl.exported import ExportedModel

    lite0, lite1 = get_backbone(LITE0), get_backbone(LITE1)
    members = [
        Member(lite0, "all", fitted.head(LITE0, 1.0), temperature=1.7, weight=0.5),
        Member(lite1, "all", fitted.head(LITE1, 1.0), temperature=0.8, weight=0.3),
        Member(lite0, "all", fitted.head(LITE0, 0.01), temperature=1.2, weight=0.2),
    ]
    model, resize = assemble_ensemble(members, fitted.classes, temperature=0.8)
    assert resize == lite1.resize  # the largest member's decode covers the other
    frozen = [layer.name for layer in model.layers if layer.name.endswith("_frozen")]
    assert sorted(frozen) == [f"{LITE0}_0_frozen", f"{LITE1}_1_frozen"]  # Lite0 runs once for its two heads
    ExportedModel.save(
        tmp_path / "ensemble", model, fitted.classes, resize, {"members": [m.describe() for m in members]}
    )
    ensemble = ExportedModel.load(tmp_path / "ensemble")
    assert ensemble.resize == lite1.resize and [m["weight"] for m in ensemble.meta["members"]] == [0.5, 0.3, 0.2]
    _, pixels, _ = ensemble.decode_files(fitted.test_files)
    blended = ensemble.predict_arrays(pixels)
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, atol=1e-5)

    # Exactly the weighted average of the members, each fed the pixels the ensemble gives it.
    crop = CropResize(resize.size, lite0.resize.size, lite0.resize.crop_fraction / resize.crop_fraction, "bicubic")
    lite0_pixels = np.asarray(crop(pixels.astype(np.float32)))
    exact = []
    for member in members:
        single, _ = assemble_ensemble([member], fitted.classes)
        exact.append(np.asarray(single(lite0_pixels if member.backbone is lite0 else pixels.astype(np.float32))))
    np.testing.assert_allclose(blended, _sharpened(0.5 * exact[0] + 0.3 * exact[1] + 0.2 * exact[2], 0.8), atol=1e-5)

    # Close to each member run alone on its own decode of the photo (Pillow once, not Pillow then the graph).
    alone = [_alone(m, fitted.test_files, fitted.classes, tmp_path / f"member{i}") for i, m in enumerate(members)]
    reference = _sharpened(0.5 * alone[0] + 0.3 * alone[1] + 0.2 * alone[2], 0.8)
    assert np.abs(blended - reference).max() < 0.05
    assert (blended.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.95

    # The calibrated member is the head of scikit-learn with the temperature: softmax(log p / T).
    scaler, lr = fitted.models[(LITE1, 1.0)]
    log_p = np.log(lr.predict_proba(scaler.transform(fitted.features[LITE1]["test"])))
    e = np.exp((log_p - log_p.max(axis=1, keepdims=True)) / 0.8)
    np.testing.assert_allclose(alone[1], e / e.sum(axis=1, keepdims=True), atol=2e-3)


def test_members_of_other_datasets_are_refused(fitted: Fitted) -> None:
    from automl.backbones.registry import get_backbone
    from automl.errors import InputError
    from automl.export.ensemble import Member, assemble_ensemble

    member = Member(get_backbone(LITE0), "all", fitted.head(LITE0, 1.0))
    with pytest.raises(InputError, match="10 classes but 3 labels"):
        assemble_ensemble([member], ["a", "b", "c"])
    with pytest.raises(InputError, match="cut must be 'all'"):
        assemble_ensemble([Member(member.backbone, "top", member.head)], fitted.classes)
