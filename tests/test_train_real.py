"""Training on real EfficientNet-Lite0 activations of animals10 photos, and the assembled export model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from automl.train import TrialData, TrialResult, assemble, baseline_config, train_trial

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "efficientnet_lite0"
WEIGHTS = "default"
CUTS = ("all", "top")


@dataclass
class Photos:
    """A small animals10 subset: pixels, labels and Lite0 activations of every cut, for train and val."""

    classes: list[str]
    pixels: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    activations: dict[str, dict[str, np.ndarray]]

    def trial_data(self, cut: str, rest=None) -> TrialData:
        return TrialData(
            self.activations["train"][cut],
            self.labels["train"],
            self.activations["val"][cut],
            self.labels["val"],
            len(self.classes),
            rest,
        )


@pytest.fixture(scope="module")
def backbone():
    from automl.backbones.registry import get_backbone

    return get_backbone(BACKBONE)


@pytest.fixture(scope="module")
def photos(animals10: Path, backbone) -> Photos:
    from automl.data.dataset import scan_dataset
    from automl.data.images import decode_image

    dataset = scan_dataset(animals10, train=0.6, val=0.3, test=0.1, seed=0, max_per_class=14)
    extractor = backbone.extractor(backbone.build(WEIGHTS), CUTS)
    pixels, labels, activations = {}, {}, {}
    for split in ("train", "val"):
        records = dataset.split(split)
        pixels[split] = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in records]).astype(
            np.float32
        )
        labels[split] = np.array([r.label for r in records])
        activations[split] = extractor.predict(pixels[split], batch_size=32, verbose=0)
    return Photos(dataset.classes, pixels, labels, activations)


@pytest.mark.parametrize("head", ["softmax", "mlp", "svm"])
def test_each_head_learns_real_lite0_features(photos: Photos, head: str) -> None:
    result = train_trial({**baseline_config(), "head": head}, photos.trial_data("all"))
    # ~8 training photos a class; a logistic regression on all of animals10 reaches about 0.97.
    assert result.best_val_accuracy >= 0.85, result.history


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _trained_scores(result: TrialResult, activations: np.ndarray, rest) -> np.ndarray:
    """The trained network (rest + head) on cached activations, softmaxed: what the export must equal."""
    from automl.train.config import TrainConfig
    from automl.train.heads import build_network

    network = build_network(TrainConfig.from_dict(result.config), result.num_classes, result.input_shape, rest)
    network.set_weights(result.weights)
    scores = network.predict(activations, verbose=0)
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _assembled_probabilities(photos: Photos, backbone, cut: str, head: str):
    """Train `head` on `cut`, assemble, and check the export against the trained network; returns both."""
    model = backbone.build(WEIGHTS)
    rest = None if cut == "all" else backbone.trainable_rest(model, cut)
    config = {**baseline_config(), "cut": cut, "head": head, "mlp_hidden": 64, "epochs": 3 if rest else 10}
    result = train_trial(config, photos.trial_data(cut, rest))

    assembled = assemble(backbone, WEIGHTS, cut, result, photos.classes)
    probabilities = assembled.predict(photos.pixels["val"], batch_size=32, verbose=0)
    assert probabilities.shape == (len(photos.labels["val"]), len(photos.classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    expected = _trained_scores(result, photos.activations["val"][cut], rest)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    # The trial's own validation accuracy, computed on cached activations; one photo of slack for an
    # argmax tie broken differently by another batch composition.
    assert abs(_accuracy(probabilities, photos.labels["val"]) - result.best_val_accuracy) <= 1 / len(expected) + 1e-6
    return assembled, probabilities


def test_assembled_svm_scores_are_the_softmax_of_its_margins(photos: Photos, backbone) -> None:
    _assembled_probabilities(photos, backbone, "all", "svm")


def test_assembled_svm_with_a_temperature_gives_softmax_of_margins_over_it(photos: Photos, backbone) -> None:
    """The calibrated export: softmax(margins / T), same ranking as the margins, T baked into the model."""
    result = train_trial({**baseline_config(), "head": "svm", "epochs": 5}, photos.trial_data("all"))
    assembled = assemble(backbone, WEIGHTS, "all", result, photos.classes, temperature=0.25)
    assert assembled.get_layer("temperature").temperature == 0.25
    probabilities = assembled.predict(photos.pixels["val"], batch_size=32, verbose=0)
    sharpened = np.log(_trained_scores(result, photos.activations["val"]["all"], None)) / 0.25
    expected = np.exp(sharpened - sharpened.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(axis=1, keepdims=True), atol=1e-4)


@pytest.mark.slow
def test_assembled_top_cut_model_reproduces_the_trial_and_loads_in_safe_mode(
    photos: Photos, backbone, tmp_path: Path
) -> None:
    assembled, probabilities = _assembled_probabilities(photos, backbone, "top", "mlp")
    path = tmp_path / "model.keras"
    assembled.save(path)
    np.save(tmp_path / "pixels.npy", photos.pixels["val"])
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import automl.backbones.layers  # registers automl>Preprocess
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        np.save({str(tmp_path / "reloaded.npy")!r}, model.predict(np.load({str(tmp_path / "pixels.npy")!r}), verbose=0))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "reloaded.npy"), probabilities, atol=1e-5)


def test_assemble_refuses_labels_of_another_dataset(photos: Photos, backbone) -> None:
    from automl.errors import InputError

    result = train_trial({"epochs": 1}, photos.trial_data("all"))
    with pytest.raises(InputError, match="3 labels for a trial trained on 10 classes"):
        assemble(backbone, WEIGHTS, "all", result, ["cat", "dog", "cow"])
