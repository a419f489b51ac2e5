"""The backbone contract on real Keras models: cuts, extractor, trainable rest, weights, safe-mode export."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from automl.backbones import CUT_NAMES, get_backbone
from automl.backbones.base import Backbone, CutAt
from automl.backbones.layers import Preprocess
from automl.errors import InputError

KERAS_APPS = ("resnet50", "vgg16", "inception_v3", "xception", "mobilenet_v2", "efficientnet_b0")


def pixels(backbone: Backbone, count: int = 2, seed: int = 0) -> np.ndarray:
    size = backbone.input_size
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def assert_frozen_then_rest_is_model(backbone: Backbone, model: keras.Model, x: np.ndarray) -> None:
    """For every cut: the cut's activation from the one-pass extractor, fed to the rest, gives the model's output."""
    activations = {cut: np.asarray(a) for cut, a in backbone.extractor(model, CUT_NAMES)(x).items()}
    full = np.asarray(model(x))
    assert np.abs(full).max() > 0, "a zero output would make the comparison meaningless"
    for cut, point in backbone.cut_points().items():
        assert activations[cut].shape == (len(x), *point.output_shape), cut
        rest = backbone.trainable_rest(model, cut)
        assert rest.trainable
        rebuilt = np.asarray(rest(activations[cut]))
        np.testing.assert_allclose(rebuilt, full, rtol=1e-4, atol=1e-5 * np.abs(full).max(), err_msg=cut)


def test_mobilenet_v2_frozen_then_rest_equals_the_whole_model_for_every_cut() -> None:
    backbone = get_backbone("mobilenet_v2")
    assert_frozen_then_rest_is_model(backbone, backbone.build("none"), pixels(backbone))


@pytest.mark.parametrize("name", KERAS_APPS)
def test_keras_app_cut_points_are_single_tensor_block_boundaries(name: str) -> None:
    backbone = get_backbone(name)
    cuts = backbone.cut_points()  # builds the architecture once; raises if a residual connection crosses a cut
    assert list(cuts) == list(CUT_NAMES)
    assert cuts["all"].output_shape == (backbone.feature_size,)
    assert cuts["none"].output_shape == (backbone.input_size, backbone.input_size, 3)
    top, half = (np.prod(cuts[c].output_shape) for c in ("top", "half"))
    assert top < half, "half cuts earlier, where the activations are larger"
    assert backbone.parameter_count() > 1_000_000


def test_a_cut_across_a_residual_connection_is_refused() -> None:
    backbone = get_backbone("resnet50")
    bad = replace(backbone, cut_at={**backbone.cut_at, "top": CutAt("conv5_block3_1_relu")})  # inside a block
    with pytest.raises(InputError, match="single-tensor block boundaries"):
        bad.cut_points()


def test_trainable_rest_has_its_own_weights() -> None:
    backbone = get_backbone("mobilenet_v2")
    model = backbone.build("none")
    rest = backbone.trainable_rest(model, "top")
    before = [w.copy() for w in model.get_weights()]
    for variable in rest.trainable_variables:
        variable.assign(variable + 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_unknown_cut_and_unknown_backbone_name_the_choices() -> None:
    backbone = get_backbone("vgg16")
    with pytest.raises(InputError) as cut_error:
        backbone.extractor(backbone.build("none"), ["middle"])
    assert "all, top, half, none" in str(cut_error.value)
    with pytest.raises(InputError) as name_error:
        get_backbone("resnet5O")
    assert "resnet50" in str(name_error.value) and "efficientnet_lite0" in str(name_error.value)


def test_random_weights_are_reproducible_and_flagged() -> None:
    backbone = get_backbone("mobilenet_v2")
    first, second = backbone.build("none").get_weights(), backbone.build("none").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert backbone.random_weights("none") and not backbone.random_weights("default")
    assert backbone.weights_id("none") != backbone.weights_id("default")


def test_local_weights_file_is_loaded_and_its_content_is_the_weights_id(tmp_path: Path) -> None:
    backbone = get_backbone("mobilenet_v2")
    model = backbone.build("none")
    model.set_weights([w + 0.01 for w in model.get_weights()])
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    loaded = backbone.build(str(path))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True))
    assert backbone.weights_offline(str(path))
    first_id = backbone.weights_id(str(path))
    model.set_weights([w * 2 for w in model.get_weights()])
    model.save_weights(path)
    assert backbone.weights_id(str(path)) != first_id


def test_missing_weights_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.h5"):
        get_backbone("resnet50").build(str(tmp_path / "nowhere.h5"))


def test_imagenet_without_the_internet_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = get_backbone("vgg16")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert not backbone.weights_offline("imagenet")
    # No internet here: the real download fails (stand-in for a blocked network where there is one).
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(InputError) as error:
        backbone.build("imagenet")
    assert "local weights file" in str(error.value) and "EfficientNet-Lite" in str(error.value)


@pytest.mark.parametrize(
    ("mode", "rgb", "expected"),
    [
        ("tf", (0, 127.5, 255), (-1, 0, 1)),
        ("lite", (127, 255, 0), (0, 1, -127 / 128)),
        ("torch", (123.675, 116.28, 103.53), (0, 0, 0)),
        ("caffe", (10, 20, 30), (30 - 103.939, 20 - 116.779, 10 - 123.68)),
    ],
)
def test_preprocess_modes(mode: str, rgb: tuple[float, ...], expected: tuple[float, ...]) -> None:
    out = Preprocess(mode)(np.array([[[rgb]]], dtype="float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_a_saved_model_with_preprocessing_loads_in_safe_mode_after_importing_the_layers(tmp_path: Path) -> None:
    pixels_in = keras.Input(shape=(4, 4, 3))
    model = keras.Model(pixels_in, keras.layers.GlobalAveragePooling2D()(Preprocess("caffe")(pixels_in)))
    model.save(tmp_path / "model.keras")
    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = (
        "import sys, numpy as np, keras, automl.backbones.layers\n"
        "d = sys.argv[1]\n"
        "m = keras.saving.load_model(d + '/model.keras', safe_mode=True)\n"
        "np.testing.assert_allclose(m.predict(np.load(d + '/x.npy'), verbose=0), np.load(d + '/expected.npy'),"
        " rtol=1e-6)\n"
        "print('loaded', [layer.__class__.__name__ for layer in m.layers])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Preprocess" in done.stdout
