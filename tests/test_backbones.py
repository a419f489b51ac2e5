"""The backbone base class and the Keras applications on real Keras models: cuts, weights, preprocessing.

The whole contract of every registered backbone is `automl.backbones.testing.check_backbone`
(tests/test_backbones_testing.py); these are the base class's own rules and the Keras applications' facts.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from automl.backbones import CUT_NAMES, get_backbone
from automl.backbones.base import PREPROCESSING_MODES, preprocessing_id
from automl.backbones.keras_apps import keras_application
from automl.backbones.layers import Preprocess
from automl.data.resize import Resize
from automl.errors import InputError

KERAS_APPS = ("resnet50", "vgg16", "inception_v3", "xception", "mobilenet_v2", "efficientnet_b0")


@pytest.mark.parametrize("name", KERAS_APPS)
def test_keras_app_offers_every_cut_with_half_before_top(name: str) -> None:
    backbone = get_backbone(name)
    cuts = backbone.cut_points()  # the architecture, built once per backbone object (check_backbone shares it)
    assert list(cuts) == list(CUT_NAMES)
    top, half = (np.prod(cuts[c].output_shape) for c in ("top", "half"))
    assert top < half, "half cuts earlier, where the activations are larger"
    assert backbone.parameter_count() > 1_000_000


def test_preprocessing_id_changes_with_every_field_of_resize_and_with_the_mode() -> None:
    resize = Resize(224, 0.875, "bilinear")
    variants = [
        resize,
        Resize(225, 0.875, "bilinear"),
        Resize(224, 0.9, "bilinear"),
        Resize(224, 0.875, "bicubic"),
    ]
    ids = {preprocessing_id(r, "tf") for r in variants} | {preprocessing_id(resize, m) for m in PREPROCESSING_MODES}
    assert len(ids) == len(variants) + len(PREPROCESSING_MODES) - 1


def test_keras_apps_keep_their_cache_keys_and_lite_follows_its_resize() -> None:
    """The Keras applications' ids are the hand-written ones of before (their cached activations stay valid)."""
    assert get_backbone("resnet50").preprocessing_id == "caffe-crop0.875-bilinear-224"
    assert get_backbone("inception_v3").preprocessing_id == "tf-crop0.875-bilinear-299"
    lite1 = get_backbone("efficientnet_lite1")
    assert lite1.preprocessing_id == preprocessing_id(lite1.resize, "lite") == f"lite-crop{240 / 272!r}-bicubic-240"
    moved = replace(get_backbone("resnet50"), resize=Resize(256, 0.875, "bilinear"))
    assert moved.preprocessing_id == "caffe-crop0.875-bilinear-256" and moved.input_size == 256


def test_an_unknown_preprocessing_mode_is_refused_when_the_backbone_is_made() -> None:
    with pytest.raises(InputError, match="unknown preprocessing mode 'imagenet'") as error:
        replace(keras_application("vgg16"), preprocessing_mode="imagenet")  # type: ignore[arg-type]
    assert "caffe" in str(error.value)


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
