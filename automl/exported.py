"""The exported model: one Keras model from raw RGB pixels to class probabilities, with its labels.

What a search leaves behind and what `predict`, `evaluate` and `serve` load. Loading is always in Keras
safe mode (a `.keras` file with a Lambda layer or any other serialized code is refused), and no pickle
is ever read from a user's path: the metadata is JSON, the weights HDF5 inside the `.keras` zip.
Saving is atomic (written into a temporary sibling folder, then renamed), so a crash or a full disk
never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from automl.backbones.base import Resize
from automl.errors import InputError
from automl.paths import write_atomic

if TYPE_CHECKING:
    import keras

MODEL_DIR = "model"
KERAS_FILE = "model.keras"
META_FILE = "automl.json"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
PREDICT_BATCH = 32
DECODE_CHUNK = 256
"""Photos decoded and predicted at a time: bounds memory on large folders (256 photos at 224² are 38 MB)."""


@dataclass
class PredictionReport:
    """Top-k labels per readable file and one error per unreadable one, in the photo-tagging JSON shape."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "errors": self.errors}


class ScoredChunk(NamedTuple):
    """One chunk of photos: the readable files, their decoded pixels and probabilities, the unreadable ones."""

    files: list[str]
    images: np.ndarray
    probabilities: np.ndarray
    errors: list[dict[str, str]]


def top_labels(scores: np.ndarray, labels: Sequence[str], top: int) -> list[dict[str, Any]]:
    """The `top` most probable labels of one photo, best first, as `{"label", "score"}` (score rounded)."""
    order = np.argsort(-scores, kind="stable")[:top]
    return [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]


def _register_custom_layers() -> None:
    """Import the backbones (core and plugins) so their registered preprocessing layers deserialize."""
    import automl.backbones.layers  # registers automl>Preprocess
    import automl.export.layers  # noqa: F401  (registers automl>Temperature, CropResize, WeightedAverage)
    from automl.backbones.registry import load_backbones

    load_backbones()


def _locate(path: Path) -> tuple[Path, Path]:
    """The `.keras` file and the `automl.json` beside it, from a run folder, a `model/` folder or the file."""
    if path.is_file():
        if path.suffix != ".keras":
            raise InputError(
                f"{path}: not a .keras model file", hint="give a run folder, its model/ folder or a .keras"
            )
        keras_file, folder = path, path.parent
    elif (path / MODEL_DIR / KERAS_FILE).is_file():
        folder = path / MODEL_DIR
        keras_file = folder / KERAS_FILE
    elif (path / KERAS_FILE).is_file():
        folder, keras_file = path, path / KERAS_FILE
    else:
        raise InputError(
            f"{path}: no exported model here (looked for {MODEL_DIR}/{KERAS_FILE} and {KERAS_FILE})",
            hint="give the run folder a search wrote, its model/ folder, or a .keras file",
        )
    meta = folder / META_FILE
    if not meta.is_file():
        raise InputError(f"{meta}: missing; the model's labels and input size are kept there")
    return keras_file, meta


class ExportedModel:
    """A loaded exported model: `labels`, `resize` (how photos become its input) and prediction."""

    def __init__(self, model: keras.Model, labels: Sequence[str], resize: Resize, meta: dict[str, Any], folder: Path):
        self.model = model
        self.labels = list(labels)
        self.resize = resize
        self.meta = meta
        self.folder = folder
        self._forward = _traced_once(model, resize.size)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExportedModel:
        """Load from a run folder, its `model/` folder or a `.keras` file, in Keras safe mode."""
        import keras

        keras_file, meta_file = _locate(Path(path))
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            labels = [str(label) for label in meta["labels"]]
            resize = Resize(**meta["resize"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{meta_file}: not a valid model description ({exc})") from exc
        _register_custom_layers()
        try:
            model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises ValueError/TypeError/OSError variously for bad files
            raise InputError(
                f"{keras_file}: cannot be loaded safely: {str(exc).splitlines()[0][:300]}",
                hint="only models without serialized code (no Lambda layers) from a trusted search load",
            ) from exc
        outputs = model.outputs[0].shape[-1]
        if outputs != len(labels):
            raise InputError(
                f"{keras_file}: the model has {outputs} outputs but {meta_file} names {len(labels)} labels"
            )
        return cls(model, labels, resize, meta, keras_file.parent)

    @staticmethod
    def save(
        folder: str | os.PathLike[str],
        model: keras.Model,
        labels: Sequence[str],
        resize: Resize,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write `model.keras` + `automl.json` into `folder` atomically, replacing any previous model there."""
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save(staging / KERAS_FILE)
            description = {**(meta or {}), "labels": list(labels), "resize": asdict(resize)}
            (staging / META_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
            _replace_folder(staging, target)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
                # a write deep inside Keras (e.g. ENOSPC) names no file: name the model that was not saved
                raise OSError(exc.errno, exc.strerror, os.fspath(target)) from exc
            raise
        return target

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for uint8 RGB images already resized to the model's input."""
        expected = (self.resize.size, self.resize.size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise InputError(f"images have shape {images.shape}; expected (N, {', '.join(map(str, expected))})")
        if len(images) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        # One traced graph called per chunk: `model.predict` builds a tf.data pipeline per call (~200 ms
        # here), which dominated the latency of the small batches a server sends.
        chunks = [
            self._forward(images[start : start + PREDICT_BATCH].astype(np.float32)).numpy()
            for start in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate(chunks)

    def decode_files(self, paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], np.ndarray, list[dict]]:
        """Decode and resize each photo for this model; unreadable ones become `{"file", "error"}` entries."""
        from automl.data.images import ImageError, decode_image

        files, images, errors = [], [], []
        for path in paths:
            name = os.fspath(path)
            try:
                data = Path(path).read_bytes()
                images.append(decode_image(data, self.resize))
                files.append(name)
            except ImageError as exc:
                errors.append({"file": name, "error": f"not an image: {exc}"})
            except OSError as exc:
                errors.append({"file": name, "error": f"cannot read: {exc.strerror or exc}"})
        size = self.resize.size
        stacked = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
        return files, stacked, errors

    def predict_chunks(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[ScoredChunk]:
        """Decode and predict `DECODE_CHUNK` photos at a time, so that memory stays bounded on any folder."""
        remaining = iter(paths)
        while chunk := list(itertools.islice(remaining, DECODE_CHUNK)):
            files, images, errors = self.decode_files(chunk)
            yield ScoredChunk(files, images, self.predict_arrays(images), errors)

    def predict_files(self, paths: Iterable[str | os.PathLike[str]], top: int = 5) -> PredictionReport:
        """The `top` labels with scores for each photo; unreadable files are reported, never raised."""
        if top < 1:
            raise InputError(f"--top must be at least 1, got {top}")
        report = PredictionReport()
        for chunk in self.predict_chunks(paths):
            report.errors += chunk.errors
            report.results += [
                {"file": name, "labels": top_labels(scores, self.labels, top)}
                for name, scores in zip(chunk.files, chunk.probabilities, strict=True)
            ]
        return report

    def export_runtimes(
        self, images: np.ndarray, y_true: Sequence[int], reference: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Write SavedModel, float TFLite and dynamic-range int8 TFLite; check each against Keras on `images`.

        `reference` is Keras' probabilities on `images` when the caller has them already (the forward
        pass over a whole test split is the expensive part); otherwise they are computed here.
        Returns per runtime its top-1 on `images`, the difference to Keras' top-1, the largest absolute
        probability difference, the share of identical top-1 predictions and the file size.
        """
        y = np.asarray(y_true, dtype=np.int64)
        if reference is None:
            reference = self.predict_arrays(images)
        elif reference.shape != (len(images), len(self.labels)):
            raise ValueError(f"reference has shape {reference.shape}; expected ({len(images)}, {len(self.labels)})")
        saved_model = self.folder / SAVED_MODEL_DIR
        _export_saved_model(self.model, saved_model)
        outputs = {
            "saved_model": _run_saved_model(saved_model, images),
            "tflite": _run_tflite(_write_tflite(saved_model, self.folder / TFLITE_FILE, False), images),
            "tflite_int8": _run_tflite(_write_tflite(saved_model, self.folder / TFLITE_INT8_FILE, True), images),
        }
        sizes = {
            "saved_model": sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file()),
            "tflite": (self.folder / TFLITE_FILE).stat().st_size,
            "tflite_int8": (self.folder / TFLITE_INT8_FILE).stat().st_size,
        }
        keras_top1 = float((reference.argmax(axis=1) == y).mean())
        report: dict[str, Any] = {"n": len(y), "keras": {"top1": keras_top1}}
        for name, probabilities in outputs.items():
            top1 = float((probabilities.argmax(axis=1) == y).mean())
            report[name] = {
                "top1": top1,
                "top1_diff": top1 - keras_top1,
                "max_abs_diff": float(np.abs(probabilities - reference).max()),
                "agreement": float((probabilities.argmax(axis=1) == reference.argmax(axis=1)).mean()),
                "bytes": sizes[name],
            }
        return report


def _traced_once(model: keras.Model, size: int) -> Any:
    """The model's inference call as one graph for every batch size (a `tf.function` with a None batch).

    Keras' own `predict_on_batch` retraces when it meets a new batch size; a server sees many sizes, and
    each trace of a whole backbone takes seconds on the thread every request waits for.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")])
    def forward(pixels: tf.Tensor) -> tf.Tensor:
        return model(pixels, training=False)

    return forward


def _replace_folder(staging: Path, target: Path) -> None:
    """Swap `staging` in for `target`: the old model stays complete until the new one is in place."""
    if not target.exists():
        staging.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    retired.rmdir()
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _export_saved_model(model: keras.Model, folder: Path) -> None:
    """A TensorFlow SavedModel whose `serve(pixels)` takes one float32 batch, written atomically."""
    import tensorflow as tf

    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        spec = tf.TensorSpec(shape=(None, *model.inputs[0].shape[1:]), dtype=tf.float32, name="pixels")
        model.export(staging / SAVED_MODEL_DIR, format="tf_saved_model", verbose=False, input_signature=[spec])
        _replace_folder(staging / SAVED_MODEL_DIR, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_saved_model(folder: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))  # keep a reference: `serve` alone lets its variables be freed
    serve = loaded.serve
    batches = [
        serve(tf.constant(images[i : i + PREDICT_BATCH], tf.float32)) for i in range(0, len(images), PREDICT_BATCH)
    ]
    return np.concatenate([np.asarray(b) for b in batches])


def _write_tflite(saved_model: Path, target: Path, int8: bool) -> Path:
    """Convert the SavedModel; `int8` gives dynamic-range quantization (int8 weights, float activations)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    write_atomic(target, converter.convert())
    return target


def _run_tflite(model_file: Path, images: np.ndarray) -> np.ndarray:
    """One image at a time, as a small device would run it (the interpreter's input is batch 1)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # its deprecation notice; TF 2.21 still ships and supports it
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(model_file), num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    sink = interpreter.get_output_details()[0]["index"]
    outputs = []
    for image in images:  # converted one at a time: a float32 copy of a whole test split is 4x its size
        interpreter.set_tensor(source, image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(sink)[0].copy())
    return np.stack(outputs)
