"""Extraction on OpenVINO: the same features as Keras within float16 storage rounding on real photos, for every
cut the engine serves; the IR converted once and reused; TensorFlow when OpenVINO cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.engines import frozen_ir_folder, openvino_frozen
from automl.cache.extract import built_model, decode_file, frozen_forward
from automl.data.dataset import ImageRecord, scan_dataset

CUTS = ["all", "top", "half"]


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(natural_images: Path) -> list[ImageRecord]:
    """16 real photos, 2 of each of natural_images' 8 classes."""
    return scan_dataset(natural_images, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=2).records


FLOAT16_RELATIVE_ROUNDING = 2.0**-11
"""The largest relative error of rounding to float16 (half its 10-bit mantissa's step)."""


def _storage_rounding(values: np.ndarray) -> float:
    """The largest absolute error float16 storage makes on these activations."""
    return float(np.abs(values.astype(np.float16).astype(np.float32) - values).max())


def test_openvino_features_equal_keras_within_float16_rounding(lite0, photos) -> None:
    pixels = np.stack([decode_file(r.path, lite0.resize) for r in photos])
    compiled = openvino_frozen(lite0, "default", CUTS, lambda: built_model(lite0, "default"))
    assert compiled is not None
    keras_values = frozen_forward(lite0, built_model(lite0, "default"), CUTS)(pixels)
    openvino_values = compiled(pixels)
    for cut in CUTS:
        keras_cut, openvino_cut = keras_values[cut], openvino_values[cut]
        assert openvino_cut.shape == keras_cut.shape == (len(photos), *lite0.cut_points()[cut].output_shape)
        difference = np.abs(openvino_cut - keras_cut)
        assert difference.max() < _storage_rounding(keras_cut), cut  # engines differ less than float16 rounds
        bulk = np.abs(keras_cut) > np.abs(keras_cut).max() / 64  # relative error means little next to zero
        assert (difference[bulk] < FLOAT16_RELATIVE_ROUNDING * np.abs(keras_cut[bulk])).all(), cut


def test_the_cache_is_the_same_whichever_engine_computed_it(tmp_path: Path, lite0, photos) -> None:
    loaded = {}
    for engine in ("openvino", "tensorflow"):
        cache = BottleneckCache(tmp_path / engine)
        stats = cache.ensure(lite0, "default", [*CUTS, "none"], photos, progress=False, engine=engine)
        assert (stats.computed, stats.failed) == (len(photos), [])
        loaded[engine] = {c: cache.load(lite0, "default", c, [r.sha1 for r in photos]) for c in [*CUTS, "none"]}
    folders = {
        e: sorted(str(p.relative_to(tmp_path / e).parent) for p in (tmp_path / e).rglob("*.parquet")) for e in loaded
    }
    assert folders["openvino"] == folders["tensorflow"]  # one cache key per cut, whatever the engine
    np.testing.assert_array_equal(loaded["openvino"]["none"], loaded["tensorflow"]["none"])
    for cut in CUTS:
        stored = loaded["tensorflow"][cut]  # float16 values, as float32
        one_step = float(np.spacing(np.abs(stored).max().astype(np.float16)))  # at the cut's largest value
        assert np.abs(loaded["openvino"][cut] - stored).max() <= one_step, cut


def test_the_ir_is_converted_once_for_every_cut_then_reused_without_keras(
    tmp_path: Path, photos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    backbone = get_backbone("mobilenet_v2")
    builds: list[str] = []

    def model():
        builds.append("built")
        return built_model(backbone, "none")

    assert openvino_frozen(backbone, "none", ["all"], model) is not None and builds == ["built"]
    folder = frozen_ir_folder(backbone, "none")
    assert folder.is_relative_to(tmp_path / "user-cache" / "automl" / "openvino") and (folder / "model.xml").is_file()
    assert builds == ["built"]  # reused: the Keras model is not even built (a damaged IR: test_engines_openvino)
    assert openvino_frozen(backbone, "none", ["top", "half"], model) is not None and builds == ["built"]

    compiled = openvino_frozen(backbone, "none", ["all"], model)
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in photos[:4]])
    expected = frozen_forward(backbone, built_model(backbone, "none"), ["all"])(pixels)["all"]
    np.testing.assert_allclose(compiled(pixels)["all"], expected, atol=1e-4)


def test_a_failed_conversion_warns_once_and_extracts_with_tensorflow(
    tmp_path: Path, photos, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setattr("automl.cache.engines._warned", set())

    def broken_export(*_args: object) -> None:
        raise RuntimeError("converter crashed")

    monkeypatch.setattr("automl.cache.engines._export_frozen", broken_export)
    backbone = get_backbone("mobilenet_v2")
    cache = BottleneckCache(tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="converter crashed.*extracting with TensorFlow") as warned:
        stats = cache.ensure(backbone, "none", ["all"], photos[:4], progress=False, engine="openvino")
        more = cache.ensure(backbone, "none", ["all"], photos[:6], progress=False, engine="openvino")
    assert (stats.computed, more.computed) == (4, 2)
    assert len([w for w in warned if "OpenVINO" in str(w.message)]) == 1
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in photos[:6]])
    expected = frozen_forward(backbone, built_model(backbone, "none"), ["all"])(pixels)["all"]
    np.testing.assert_allclose(cache.load(backbone, "none", "all", [r.sha1 for r in photos[:6]]), expected, atol=2e-3)
    assert not (tmp_path / "user-cache" / "automl" / "openvino").exists() or not any(
        (tmp_path / "user-cache" / "automl" / "openvino").iterdir()
    )
