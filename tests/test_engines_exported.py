"""The exported model's OpenVINO IR: written and checked by export_runtimes, run by `predict`/`serve --engine`
(a tiny real conv net on real photos; the search-built model's IR is checked in test_exported.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_model import save_tiny_model
from typer.testing import CliRunner

from automl.cli.main import app
from automl.data.resize import Resize
from automl.errors import InputError
from automl.exported import ExportedModel


@pytest.fixture(scope="module")
def photos(animals10: Path) -> list[Path]:
    """Three real photos of each class."""
    return [path for folder in sorted(animals10.iterdir()) for path in sorted(folder.iterdir())[:3]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, animals10: Path, photos: list[Path]) -> tuple[Path, dict]:
    """A tiny model saved like a search saves its best, with its runtimes exported and checked on the photos."""
    labels = sorted(p.name for p in animals10.iterdir() if p.is_dir())
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", labels, Resize(48), seed=5)
    model = ExportedModel.load(folder)
    _, images, _ = model.decode_files(photos)
    y_true = [labels.index(path.parent.name) for path in photos]
    return folder, model.export_runtimes(images, y_true)


def test_export_runtimes_writes_an_openvino_ir_as_accurate_as_keras(exported: tuple[Path, dict]) -> None:
    folder, report = exported
    assert sorted(p.name for p in (folder / "openvino").iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    openvino = report["openvino"]
    assert openvino["top1"] == report["keras"]["top1"] and openvino["top1_diff"] == 0.0
    assert openvino["agreement"] == 1.0 and openvino["max_abs_diff"] < 1e-5
    assert openvino["bytes"] == sum(f.stat().st_size for f in (folder / "openvino").iterdir())


def test_predict_engine_openvino_gives_keras_top1(exported: tuple[Path, dict], photos: list[Path]) -> None:
    folder, _ = exported
    runner = CliRunner()
    outputs = {}
    for engine in ("keras", "openvino", "auto"):
        result = runner.invoke(app, ["predict", str(folder), *map(str, photos), "--engine", engine, "--json"])
        assert result.exit_code == 0, result.output
        outputs[engine] = json.loads(result.stdout)["results"]
    for keras_result, openvino_result in zip(outputs["keras"], outputs["openvino"], strict=True):
        assert openvino_result["labels"][0]["label"] == keras_result["labels"][0]["label"]
        assert openvino_result["labels"][0]["score"] == pytest.approx(keras_result["labels"][0]["score"], abs=1e-5)
    assert outputs["auto"] == outputs["openvino"]


def test_engine_choice_when_loading(exported: tuple[Path, dict], tmp_path: Path, animals10: Path) -> None:
    folder, _ = exported
    assert ExportedModel.load(folder).engine == "keras"  # the library default stays Keras
    assert ExportedModel.load(folder, engine="auto").engine == "openvino"
    assert ExportedModel.load(folder, engine="openvino").engine == "openvino"
    with pytest.raises(InputError, match="'onnx' is not known"):
        ExportedModel.load(folder, engine="onnx")

    labels = sorted(p.name for p in animals10.iterdir() if p.is_dir())
    bare = save_tiny_model(tmp_path / "bare", labels, Resize(48))  # never exported: no IR
    assert ExportedModel.load(bare, engine="auto").engine == "keras"
    with pytest.raises(InputError, match="no usable OpenVINO model"):
        ExportedModel.load(bare, engine="openvino")


def test_a_damaged_ir_is_refused_or_skipped_by_auto(exported: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(exported[0], copy)
    (copy / "openvino" / "model.bin").write_bytes(b"\0" * 16)
    assert ExportedModel.load(copy, engine="auto").engine == "keras"
    with pytest.raises(InputError, match=r"model\.bin has 16 bytes"):
        ExportedModel.load(copy, engine="openvino")
    images = np.zeros((2, 48, 48, 3), dtype=np.uint8)
    assert ExportedModel.load(copy, engine="auto").predict_arrays(images).shape == (
        2,
        len(ExportedModel.load(copy).labels),
    )
