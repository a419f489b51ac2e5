"""The OpenVINO IR of a Keras model: converted once, reused, rebuilt when damaged, equal to Keras (a small real
conv net; the backbones' features are checked in test_cache_engines.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from automl.engines import openvino as ov_engine
from automl.engines import resolve
from automl.errors import InputError


@pytest.fixture(scope="module")
def net():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"spatial": x, "pooled": pooled})


def _exporter(net, calls: list[Path]):
    import tensorflow as tf

    def export(target: Path) -> None:
        calls.append(target)
        spec = tf.TensorSpec((None, 32, 32, 3), tf.float32)
        net.export(str(target), format="tf_saved_model", verbose=False, input_signature=[spec])

    return export


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory, net) -> Path:
    folder = tmp_path_factory.mktemp("ir") / "net"
    calls: list[Path] = []
    assert ov_engine.ensure_ir(folder, _exporter(net, calls)) is True and len(calls) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    return folder


def test_an_ir_is_converted_once_reused_and_rebuilt_when_damaged(tmp_path: Path, net, ir: Path) -> None:
    folder = tmp_path / "ir"
    shutil.copytree(ir, folder)
    calls: list[Path] = []
    assert ov_engine.ensure_ir(folder, _exporter(net, calls)) is False  # whole: not converted again
    assert calls == []

    with open(folder / "model.bin", "r+b") as handle:  # a flipped byte: same size, other content
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert "SHA-256" in ov_engine.damage(folder)
    assert ov_engine.ensure_ir(folder, _exporter(net, calls)) is True and len(calls) == 1
    assert ov_engine.damage(folder) is None

    (folder / "model.bin").write_bytes(b"")  # a partial copy
    assert "bytes" in ov_engine.damage(folder)
    (folder / "manifest.json").unlink()  # a crash before the manifest (the last file written)
    assert "manifest.json is missing" in ov_engine.damage(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or damaged copies left


def test_a_failed_export_leaves_nothing_and_raises_conversion_error(tmp_path: Path) -> None:
    def broken(_target: Path) -> None:
        raise ValueError("no SavedModel today")

    with pytest.raises(ov_engine.ConversionError, match="no SavedModel today"):
        ov_engine.ensure_ir(tmp_path / "ir", broken)
    assert list(tmp_path.iterdir()) == []


def test_the_compiled_ir_equals_keras_by_call_and_by_stream(net, ir: Path) -> None:
    compiled = ov_engine.CompiledIR(ir, uint8_input=True)
    assert sorted(compiled.names) == ["pooled", "spatial"]
    pixels = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    expected = {name: np.asarray(value) for name, value in net(pixels.astype(np.float32)).items()}
    direct = compiled(pixels)
    for name in expected:
        np.testing.assert_allclose(direct[name], expected[name], atol=1e-5)

    batches = [pixels[:4], pixels[4:8], pixels[8:]]
    streamed = dict(compiled.stream(range(3), lambda i: batches[i]))
    assert sorted(streamed) == [0, 1, 2]
    for i, batch in enumerate(batches):
        np.testing.assert_allclose(streamed[i]["pooled"], compiled(batch)["pooled"], atol=1e-6)

    # a batch larger than the request size goes in chunks (3 + 3 + 3 + 1 rows here) and comes back whole, in order
    (item, chunked), *rest = list(compiled.stream([0], lambda _: pixels, chunk=3))
    assert item == 0 and not rest
    for name in expected:
        assert chunked[name].shape == expected[name].shape
        np.testing.assert_allclose(chunked[name], direct[name], atol=1e-5)


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("auto") == resolve("openvino") == "openvino"  # installed here (a dependency)
    assert resolve("tensorflow") == "tensorflow"
    with pytest.raises(InputError, match="'onnx' is not known"):
        resolve("onnx")
    monkeypatch.setattr("automl.engines.openvino_installed", lambda: False)
    assert resolve("auto") == "tensorflow"
    with pytest.raises(InputError, match="not installed"):
        resolve("openvino")
