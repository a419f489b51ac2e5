"""Flip test-time augmentation: a real EfficientNet-Lite0 classifier on real animals10 photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from automl.data.dataset import scan_dataset
from automl.data.images import decode_image
from automl.train.tta import with_flip_tta


def test_the_tta_model_is_the_mean_of_the_two_passes_and_loads_in_safe_mode(animals10: Path, tmp_path: Path) -> None:
    import keras

    from automl.backbones.registry import get_backbone

    backbone = get_backbone("efficientnet_lite0")
    records = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=1).records[:6]
    pixels = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in records]).astype(np.float32)
    keras.utils.set_random_seed(0)
    features = backbone.build("default")
    inputs = keras.Input(shape=(backbone.input_size, backbone.input_size, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(features(inputs)))

    plain = classifier.predict(pixels, verbose=0)
    mirrored = classifier.predict(pixels[:, :, ::-1].copy(), verbose=0)
    assert np.abs(plain - mirrored).max() > 1e-3  # real photos are not symmetric: the test can tell
    tta = with_flip_tta(classifier)
    np.testing.assert_allclose(tta.predict(pixels, verbose=0), (plain + mirrored) / 2, atol=1e-5)

    tta.save(tmp_path / "tta.keras")
    loaded = keras.saving.load_model(tmp_path / "tta.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), (plain + mirrored) / 2, atol=1e-5)


def test_a_temperature_after_the_flip_average_recalibrates_the_mean(animals10: Path) -> None:
    """An ensemble's blend temperature goes after the flip average: softmax(log(mean of the passes) / T)."""
    import keras

    from automl.backbones.registry import get_backbone

    records = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=1).records[:4]
    resize = get_backbone("efficientnet_lite0").resize
    pixels = np.stack([decode_image(r.path.read_bytes(), resize) for r in records]).astype(np.float32)
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=pixels.shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 5, strides=4)(inputs / 255.0))
    classifier = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(pooled))
    mean = (classifier.predict(pixels, verbose=0) + classifier.predict(pixels[:, :, ::-1].copy(), verbose=0)) / 2
    logits = np.log(mean) / 0.7
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        with_flip_tta(classifier, temperature=0.7).predict(pixels, verbose=0), expected, atol=1e-5
    )
