"""A model or run folder from someone else: every size is bounded before anything is allocated, the
description is validated like a recipe, and `automl predict` reads only what it should, printing it safely."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from tiny_model import save_tiny_model
from typer.testing import CliRunner

from automl.cli.main import app
from automl.data.resize import Resize
from automl.errors import InputError
from automl.exported import MAX_LAYER_WIDTH, ExportedModel


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = ["[/]", "cat[/b]", "dog\x1b[31m"]  # markup and a terminal escape: printed literally, never run
    return save_tiny_model(tmp_path_factory.mktemp("run") / "model", labels, Resize(32, 0.875, "bicubic"))


def with_description(tiny_dir: Path, tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    description = json.loads((folder / "automl.json").read_text())
    for key, value in changes.items():
        if "." in key:
            section, field = key.split(".")
            description[section][field] = value
        else:
            description[key] = value
    (folder / "automl.json").write_text(json.dumps(description))
    return folder


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"labels": "cat,dog,fox"}, r"labels: Input should be a valid (list|array)"),
        ({"labels": ["cat", "cat", "dog"]}, r"labels must be unique; repeated: 'cat'"),
        ({"labels": ["cat", 3, "dog"]}, r"labels.1: Input should be a valid string"),
        ({"resize.size": 100_000}, r"resize.size: Input should be less than or equal to 1024"),
        ({"resize.crop_fraction": 0}, r"resize.crop_fraction: Input should be greater than 0"),
        ({"resize.resample": "lanczos9"}, r"resize.resample: Input should be 'bicubic' or 'bilinear'"),
        ({"resize": None}, r"resize: Input should be an object|resize: Input should be a valid dictionary"),
    ],
)
def test_a_bad_description_is_refused_naming_the_field(
    tiny_dir: Path, tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(InputError, match=reason):
        ExportedModel.load(with_description(tiny_dir, tmp_path, **changes))


def _with_config(tiny_dir: Path, tmp_path: Path, *replacements: tuple[bytes, bytes]) -> Path:
    """A copy of the tiny model folder whose model.keras has `replacements` made in its config.json."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    source, target = folder / "model.keras", tmp_path / "bomb.keras"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as bomb:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "config.json":
                for old, new in replacements:
                    assert old in data, old
                    data = data.replace(old, new)
            bomb.writestr(item, data)
    os.replace(target, source)
    return folder


def test_a_model_declaring_huge_layers_is_refused_before_keras_allocates(tiny_dir: Path, tmp_path: Path) -> None:
    """A 20 KB file declaring Dense(units=1e8): its config is read from the zip, Keras never sees it."""
    folder = _with_config(tiny_dir, tmp_path, (b'"units": 3', b'"units": 100000000'))
    assert (folder / "model.keras").stat().st_size < 100_000
    with pytest.raises(
        InputError, match=rf"declares a width of 100,000,000, more than the limit of {MAX_LAYER_WIDTH:,}"
    ):
        ExportedModel.load(folder)


def test_layers_each_within_the_width_limit_but_huge_together_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """Conv2D(65,536) into Dense(65,536): each width allowed; 3x3x3x65,536 + 65,536² parameters together (17 GB)."""
    folder = _with_config(
        tiny_dir, tmp_path, (b'"filters": 8', b'"filters": 65536'), (b'"units": 3', b'"units": 65536')
    )
    with pytest.raises(InputError, match=r"would allocate about 4,296,736,768 parameters, more than the limit of 250,"):
        ExportedModel.load(folder)


def test_real_architectures_are_estimated_within_their_true_size() -> None:
    """The estimate that guards loading, against Keras' own count: a real model is never refused by it."""
    import keras

    from automl.exported import MAX_PARAMETERS, _estimated_parameters

    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3))
    estimated = _estimated_parameters(json.loads(model.to_json()))
    assert 0.8 * model.count_params() < estimated < 1.2 * model.count_params() < MAX_PARAMETERS


def test_a_keras_file_that_is_no_zip_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.keras").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match=r"not a readable \.keras archive"):
        ExportedModel.load(folder)


@pytest.mark.timeout(120)  # a FIFO read would hang forever
def test_predict_skips_fifos_devices_and_oversized_files_and_predicts_the_rest(
    tiny_dir: Path, tmp_path: Path, animals10: Path
) -> None:
    good = animals10 / "chicken" / "chicken (1).jpeg"
    os.mkfifo(tmp_path / "pipe.jpg")
    named = tmp_path / "photo[" / "b]\x07.jpg"  # the path holds a closing tag `[/b]` and a BEL
    named.parent.mkdir()
    shutil.copy(good, named)
    args = ["predict", str(tiny_dir), str(tmp_path / "pipe.jpg"), "/dev/zero", str(tmp_path), str(good), str(named)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["file"] for r in payload["results"]] == [str(good), str(named)]
    errors = {e["file"]: e["error"] for e in payload["errors"]}
    assert "a FIFO" in errors[str(tmp_path / "pipe.jpg")]
    assert "a character device" in errors["/dev/zero"]
    assert "a folder" in errors[str(tmp_path)]
    small = CliRunner().invoke(app, ["predict", str(tiny_dir), str(good), "--max-file-mb", "0.001", "--json"])
    assert small.exit_code == 1 and "file too large" in json.loads(small.stdout)["errors"][0]["error"]
    human = CliRunner().invoke(app, args)
    assert human.exit_code == 0 and human.exception is None, human.output
    assert "photo[/b]\\x07.jpg" in human.stdout and "cat[/b]" in human.stdout and "\x1b[31m" not in human.stdout
