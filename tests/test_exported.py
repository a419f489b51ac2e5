"""The exported model: loading from every accepted path in safe mode, atomic saving, photo prediction, runtimes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_model import save_tiny_model

from automl.data.resize import Resize
from automl.errors import InputError
from automl.exported import ExportedModel


def _photos(animals10: Path, count: int = 5) -> list[Path]:
    """One real photo from each of the first `count` classes (names with spaces and parentheses included)."""
    return [sorted((animals10 / name).iterdir())[0] for name in sorted(p.name for p in animals10.iterdir())[:count]]


@pytest.fixture(scope="session")
def loaded(exported_run: Path) -> ExportedModel:
    return ExportedModel.load(exported_run)


def test_loads_from_run_folder_model_folder_and_keras_file(exported_run: Path, loaded: ExportedModel) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, loaded.resize.size, loaded.resize.size, 3), np.uint8)
    expected = loaded.predict_arrays(pixels)
    for path in (exported_run / "model", exported_run / "model" / "model.keras"):
        again = ExportedModel.load(path)
        assert again.labels == loaded.labels
        np.testing.assert_allclose(again.predict_arrays(pixels), expected, atol=1e-6)
    assert expected.shape == (2, len(loaded.labels))
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)


def test_a_folder_without_a_model_or_labels_is_refused_with_a_hint(tmp_path: Path, exported_run: Path) -> None:
    with pytest.raises(InputError, match="no exported model here"):
        ExportedModel.load(tmp_path)
    lonely = tmp_path / "model.keras"
    shutil.copy(exported_run / "model" / "model.keras", lonely)
    with pytest.raises(InputError, match=r"automl\.json: missing"):
        ExportedModel.load(lonely)


def test_a_keras_file_with_a_lambda_layer_is_refused_in_safe_mode(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    from automl.data.resize import Resize

    folder = ExportedModel.save(tmp_path / "model", model, ["a", "b"], Resize(size=8))
    with pytest.raises(InputError, match="cannot be loaded safely"):
        ExportedModel.load(folder)


class _Trap:
    """Unpickling this writes a marker file: proof that someone loaded a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("name", ["model.pkl", "model.keras"])
def test_a_pickle_given_as_the_model_is_never_unpickled(tmp_path: Path, exported_run: Path, name: str) -> None:
    import pickle

    marker = tmp_path / "marker"
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(exported_run / "model" / "automl.json", folder)
    (folder / name).write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(
        InputError, match=r"not a \.keras model file|cannot be loaded safely|not a readable \.keras archive"
    ):
        ExportedModel.load(folder / name)
    assert not marker.exists()


def test_saving_is_atomic_a_failed_save_keeps_the_old_model(
    tmp_path: Path, loaded: ExportedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = ExportedModel.save(tmp_path / "model", loaded.model, loaded.labels, loaded.resize, {"version": 1})

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loaded.model, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        ExportedModel.save(target, loaded.model, loaded.labels, loaded.resize, {"version": 2})
    assert json.loads((target / "automl.json").read_text())["version"] == 1
    assert ExportedModel.load(target).labels == loaded.labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no staging folder left behind"


def test_predict_files_labels_real_photos_and_reports_broken_ones(
    tmp_path: Path, loaded: ExportedModel, animals10: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    missing = tmp_path / "missing.png"
    photos = _photos(animals10)
    report = loaded.predict_files([*photos, broken, missing], top=3).to_dict()

    assert [r["file"] for r in report["results"]] == [str(p) for p in photos]
    for result in report["results"]:
        scores = [item["score"] for item in result["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-5
        assert {item["label"] for item in result["labels"]} <= set(loaded.labels)
    errors = {e["file"]: e["error"] for e in report["errors"]}
    assert errors[str(broken)].startswith("not an image")
    assert errors[str(missing)].startswith("cannot read")


def test_other_runtimes_agree_with_keras_on_the_test_split(exported_run: Path) -> None:
    runtimes = json.loads((exported_run / "metrics.json").read_text())["runtimes"]
    keras_top1 = runtimes["keras"]["top1"]
    for name, file in (
        ("saved_model", "saved_model"),
        ("tflite", "model.tflite"),
        ("tflite_int8", "model_int8.tflite"),
        ("openvino", "openvino/model.xml"),
    ):
        assert (exported_run / "model" / file).exists()
        assert abs(runtimes[name]["top1"] - keras_top1) <= 0.01, f"{name} differs from Keras by more than 1 point"
        assert runtimes[name]["top1_diff"] == pytest.approx(runtimes[name]["top1"] - keras_top1)
    assert runtimes["tflite"]["max_abs_diff"] < 1e-3
    assert runtimes["openvino"]["top1_diff"] == 0.0 and runtimes["openvino"]["max_abs_diff"] < 1e-4
    assert runtimes["tflite_int8"]["bytes"] < runtimes["tflite"]["bytes"] / 2, "int8 weights are a quarter the size"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, animals10: Path) -> ExportedModel:
    """A tiny real conv net with the animals10 labels: enough to check the plumbing without a backbone's cost."""
    labels = sorted(p.name for p in animals10.iterdir() if p.is_dir())
    return ExportedModel.load(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", labels, Resize(48), seed=3))


def test_every_batch_size_shares_one_traced_graph_with_keras_results(tiny: ExportedModel) -> None:
    images = np.random.default_rng(0).integers(0, 256, (40, 48, 48, 3), dtype=np.uint8)
    outputs = [tiny.predict_arrays(images[:n]) for n in (1, 3, 40)]  # 40: a full chunk of 32 and one of 8

    assert tiny._forward.experimental_get_tracing_count() == 1, "a new batch size must not retrace the model"
    expected = np.asarray(tiny.model(images.astype(np.float32), training=False))
    for got in outputs:
        np.testing.assert_allclose(got, expected[: len(got)], rtol=1e-5, atol=1e-6)


def test_predict_files_decodes_in_bounded_chunks_with_the_same_results(
    tiny: ExportedModel, animals10: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = _photos(animals10, 5)
    whole = tiny.predict_files(photos, top=3).to_dict()
    seen: list[int] = []
    predict = tiny.predict_arrays
    monkeypatch.setattr(tiny, "predict_arrays", lambda images: seen.append(len(images)) or predict(images))
    monkeypatch.setattr("automl.exported.DECODE_CHUNK", 2)

    assert tiny.predict_files(photos, top=3).to_dict() == whole
    assert seen == [2, 2, 1], "photos are decoded and predicted two at a time, not all at once"


def test_export_runtimes_reuses_the_callers_keras_probabilities(
    tiny: ExportedModel, animals10: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, images, _ = tiny.decode_files(_photos(animals10, 6))
    reference = tiny.predict_arrays(images)
    y_true = [0, 1, 2, 3, 4, 5]
    model = ExportedModel(tiny.model, tiny.labels, tiny.resize, tiny.meta, tmp_path)

    def no_second_pass(_: np.ndarray) -> np.ndarray:
        raise AssertionError("export_runtimes ran the Keras forward pass again")

    monkeypatch.setattr(model, "predict_arrays", no_second_pass)
    report = model.export_runtimes(images, y_true, reference=reference)

    assert report["keras"]["top1"] == pytest.approx(float((reference.argmax(axis=1) == y_true).mean()))
    assert report["tflite"]["max_abs_diff"] < 1e-5 and report["tflite"]["agreement"] == 1.0
    with pytest.raises(ValueError, match="reference has shape"):
        model.export_runtimes(images, y_true, reference=reference[:3])
