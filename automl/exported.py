"""The exported model: one Keras model from raw RGB pixels to class probabilities, with its labels.

What a search leaves behind and what `predict`, `evaluate` and `serve` load. Loading is always in Keras
safe mode (a `.keras` file with a Lambda layer or any other serialized code is refused), and no pickle
is ever read from a user's path: the metadata is JSON, the weights HDF5 inside the `.keras` zip.
A model from someone else is bounded before Keras allocates anything: the file's size, its zip members,
every layer width its `config.json` declares, what those layers would allocate, and the parameters its
weights file declares (`inspect_keras_file`); `automl.json` is validated as strictly as a recipe (`ModelDescription`).
Saving is atomic (`automl.atomic`: a temporary sibling folder, then renamed), so a crash or a full disk
never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from automl.atomic import staging_folder, write_atomic
from automl.data.files import MAX_FILE_BYTES, FileRefused, read_bounded
from automl.data.resize import Resize
from automl.engines import openvino_installed
from automl.engines.exported import export_ir, ir_size, openvino_forward
from automl.engines.openvino import CompiledIR
from automl.errors import InputError
from automl.runs.folder import MODEL_DIR

if TYPE_CHECKING:
    import keras


KERAS_FILE = "model.keras"
META_FILE = "automl.json"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
MAX_MODEL_BYTES = 2 * 1024**3
"""Largest `.keras` file loaded (EfficientNet-B7 in float32 is ~0.27 GB)."""
MAX_DESCRIPTION_BYTES = 16 * 1024**2
"""Largest `automl.json` and `config.json` read (100,000 labels fit in ~2 MB)."""
MAX_PARAMETERS = 250_000_000
"""Most parameters a loaded model's weights may declare (1 GB as float32; EfficientNet-B7 has 66 M)."""
MAX_LAYER_WIDTH = 65_536
"""Largest `units`, `filters`, ... a layer's config may declare: Keras allocates them before any weight is read."""
_WIDTH_KEYS = frozenset({"units", "filters", "output_dim", "input_dim", "num_heads", "key_dim", "value_dim"})
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


class ResizeDescription(BaseModel):
    """`automl.json`'s `resize`: how a photo becomes the model's input."""

    model_config = ConfigDict(extra="forbid", strict=True)

    size: int = Field(ge=8, le=1024)
    crop_fraction: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    resample: Literal["bicubic", "bilinear"] = "bilinear"


class ModelDescription(BaseModel):
    """`automl.json`, validated before it is used: a model from someone else may carry anything."""

    model_config = ConfigDict(extra="allow")

    labels: Annotated[list[StrictStr], Field(min_length=2, max_length=100_000)]
    resize: ResizeDescription

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        repeated = (
            sorted({label for label in labels if labels.count(label) > 1}) if len(set(labels)) < len(labels) else []
        )
        if repeated:
            raise ValueError(f"labels must be unique; repeated: {', '.join(map(repr, repeated[:5]))}")
        if any(not label.strip() or len(label) > 200 for label in labels):
            raise ValueError("every label must be a non-empty name of at most 200 characters")
        return labels


def read_description(meta_file: Path) -> ModelDescription:
    """`automl.json` as a `ModelDescription`, or InputError naming the file and every bad field."""
    try:
        return ModelDescription.model_validate_json(read_bounded(meta_file, MAX_DESCRIPTION_BYTES))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta_file}: cannot read the model description ({exc})") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}" for error in exc.errors()[:8]
        )
        raise InputError(
            f"{meta_file}: not a valid model description: {problems}",
            hint="automl.json holds labels (unique names), resize {size 8-1024, crop_fraction in (0, 1], "
            "resample bicubic|bilinear}; re-export the model with a search",
        ) from None


def inspect_keras_file(keras_file: Path) -> None:
    """Refuse a `.keras` file whose size, zip members, layer widths or parameters pass the bounds above,
    before Keras reads it (Keras allocates every variable its config declares, then reads the weights)."""
    refuse = lambda why: InputError(f"{keras_file}: refused before loading: {why}", hint=_TRUSTED)  # noqa: E731
    size = keras_file.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise refuse(f"{size:,} bytes, more than the limit of {MAX_MODEL_BYTES:,}")
    try:
        with zipfile.ZipFile(keras_file) as archive:
            members = {info.filename: info for info in archive.infolist()}
            unpacked = sum(info.file_size for info in members.values())
            if unpacked > 2 * MAX_MODEL_BYTES:
                raise refuse(f"its members unpack to {unpacked:,} bytes")
            config = members.get("config.json")
            if config is None or config.file_size > MAX_DESCRIPTION_BYTES:
                raise refuse("no config.json, or one larger than 16 MiB")
            layers = json.loads(archive.read(config))
            widths, estimated = _declared_widths(layers), _estimated_parameters(layers)
            weights = members.get("model.weights.h5")
            parameters = _declared_parameters(archive, weights) if weights is not None else 0
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise refuse(f"not a readable .keras archive ({type(exc).__name__}: {exc})") from exc
    if widths and max(widths) > MAX_LAYER_WIDTH:
        raise refuse(f"a layer declares a width of {max(widths):,}, more than the limit of {MAX_LAYER_WIDTH:,}")
    if estimated > MAX_PARAMETERS:
        raise refuse(
            f"its layers would allocate about {estimated:,} parameters, more than the limit of {MAX_PARAMETERS:,}"
        )
    if parameters > MAX_PARAMETERS:
        raise refuse(f"its weights declare {parameters:,} parameters, more than the limit of {MAX_PARAMETERS:,}")


_TRUSTED = "only models a search exported (no serialized code, sizes within automl.exported's limits) load"


def _estimated_parameters(config: Any) -> int:
    """What Keras would allocate for the config's Dense, Conv and Embedding layers, before reading any weight.

    Layers are met in the config's (topological) order; a layer's input width is taken as the last width
    declared before it (the input's channels at first): exact for the chains of a CNN or an MLP, a close
    estimate across branches. Enough to see a small file whose layers would take gigabytes.
    """
    total, previous = 0, 3

    def visit(node: Any) -> None:
        nonlocal total, previous
        if isinstance(node, dict):
            layer = node.get("config") if isinstance(node.get("class_name"), str) else None
            if isinstance(layer, dict):
                shape = layer.get("batch_shape") or layer.get("batch_input_shape")
                if node["class_name"] == "InputLayer" and isinstance(shape, list) and isinstance(shape[-1], int):
                    previous = shape[-1]
                width = next(
                    (layer[k] for k in ("units", "filters", "output_dim") if isinstance(layer.get(k), int)), None
                )
                if width is not None:
                    kernel = layer.get("kernel_size")
                    area = (
                        int(np.prod(kernel))
                        if isinstance(kernel, list) and all(isinstance(k, int) for k in kernel)
                        else 1
                    )
                    inputs = layer["input_dim"] if isinstance(layer.get("input_dim"), int) else previous
                    total += int(inputs) * int(width) * area
                    previous = int(width)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return total


def _declared_widths(config: Any) -> list[int]:
    """Every number a config declares under a width key (`units`, `filters`, ...), at any depth."""
    if isinstance(config, dict):
        found = [int(v) for k, v in config.items() if k in _WIDTH_KEYS and isinstance(v, int | float) and v == v]
        return found + [w for value in config.values() for w in _declared_widths(value)]
    if isinstance(config, list):
        return [w for value in config for w in _declared_widths(value)]
    return []


def _declared_parameters(archive: zipfile.ZipFile, weights: zipfile.ZipInfo) -> int:
    """The total size of every array the weights file declares, read from its HDF5 headers (no data loaded)."""
    import h5py

    total = 0

    def count(_: str, item: Any) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += int(np.prod(item.shape, dtype=np.float64)) if item.shape else 1

    with archive.open(weights) as stream, h5py.File(stream, "r") as h5:
        h5.visititems(count)
    return total


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
        self.engine = "keras"
        """What runs `predict_arrays`: `keras`, or `openvino` when loaded with that engine."""

    @classmethod
    def load(cls, path: str | os.PathLike[str], engine: str = "keras") -> ExportedModel:
        """Load from a run folder, its `model/` folder or a `.keras` file, in Keras safe mode.

        `engine` runs the predictions: `keras`, `openvino` (the IR `export_runtimes` wrote beside the model)
        or `auto` (OpenVINO when that IR is there); see `automl.engines.exported`.
        """
        import keras

        keras_file, meta_file = _locate(Path(path))
        description = read_description(meta_file)
        meta = description.model_dump()
        labels = description.labels
        resize = Resize(**description.resize.model_dump())
        inspect_keras_file(keras_file)
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
        exported = cls(model, labels, resize, meta, keras_file.parent)
        forward = openvino_forward(exported.folder, engine)
        if forward is not None:
            exported._forward, exported.engine = forward, "openvino"
        return exported

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
        try:
            with staging_folder(target) as staging:
                model.save(staging / KERAS_FILE)
                description = {**(meta or {}), "labels": list(labels), "resize": asdict(resize)}
                (staging / META_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
        except OSError as exc:
            if exc.errno is not None and exc.filename is None:
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
            np.asarray(self._forward(images[start : start + PREDICT_BATCH].astype(np.float32)))
            for start in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate(chunks)

    def decode_files(
        self, paths: Iterable[str | os.PathLike[str]], max_bytes: int = MAX_FILE_BYTES
    ) -> tuple[list[str], np.ndarray, list[dict]]:
        """Decode and resize each photo for this model; unreadable ones become `{"file", "error"}` entries.

        Only regular files of at most `max_bytes` are read (a FIFO or `/dev/zero` is reported, not read);
        whatever goes wrong with one photo is its entry, never the end of the others.
        """
        from automl.data.images import ImageError, decode_image

        files, images, errors = [], [], []
        for path in paths:
            name = os.fsdecode(path)
            try:
                images.append(decode_image(read_bounded(path, max_bytes), self.resize))
                files.append(name)
            except ImageError as exc:
                errors.append({"file": name, "error": f"not an image: {exc}"})
            except FileRefused as exc:
                errors.append({"file": name, "error": f"skipped: {exc}"})
            except (OSError, ValueError) as exc:  # ValueError: a name with a NUL byte
                errors.append({"file": name, "error": f"cannot read: {getattr(exc, 'strerror', None) or exc}"})
            except MemoryError:
                errors.append({"file": name, "error": "cannot decode: not enough memory for this photo"})
        size = self.resize.size
        stacked = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
        return files, stacked, errors

    def predict_chunks(
        self, paths: Iterable[str | os.PathLike[str]], max_bytes: int = MAX_FILE_BYTES
    ) -> Iterator[ScoredChunk]:
        """Decode and predict `DECODE_CHUNK` photos at a time, so that memory stays bounded on any folder."""
        remaining = iter(paths)
        while chunk := list(itertools.islice(remaining, DECODE_CHUNK)):
            files, images, errors = self.decode_files(chunk, max_bytes)
            yield ScoredChunk(files, images, self.predict_arrays(images), errors)

    def predict_files(
        self, paths: Iterable[str | os.PathLike[str]], top: int = 5, max_bytes: int = MAX_FILE_BYTES
    ) -> PredictionReport:
        """The `top` labels with scores for each photo; unreadable files are reported, never raised."""
        if top < 1:
            raise InputError(f"--top must be at least 1, got {top}")
        report = PredictionReport()
        for chunk in self.predict_chunks(paths, max_bytes):
            report.errors += chunk.errors
            report.results += [
                {"file": name, "labels": top_labels(scores, self.labels, top)}
                for name, scores in zip(chunk.files, chunk.probabilities, strict=True)
            ]
        return report

    def export_runtimes(
        self, images: np.ndarray, y_true: Sequence[int] | np.ndarray, reference: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Write SavedModel, float TFLite, dynamic-range int8 TFLite and (when `openvino` is installed) the
        OpenVINO IR `model/openvino/`; check each against Keras on `images`.

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
        if openvino_installed():
            outputs["openvino"] = _run_openvino(export_ir(saved_model, self.folder), images)
        sizes = {
            "saved_model": sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file()),
            "tflite": (self.folder / TFLITE_FILE).stat().st_size,
            "tflite_int8": (self.folder / TFLITE_INT8_FILE).stat().st_size,
        }
        if "openvino" in outputs:
            sizes["openvino"] = ir_size(self.folder)
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


def _export_saved_model(model: keras.Model, folder: Path) -> None:
    """A TensorFlow SavedModel whose `serve(pixels)` takes one float32 batch, written atomically."""
    import tensorflow as tf

    spec = tf.TensorSpec(shape=(None, *model.inputs[0].shape[1:]), dtype=tf.float32, name="pixels")
    with staging_folder(folder) as staging:
        model.export(staging, format="tf_saved_model", verbose=False, input_signature=[spec])


def _run_saved_model(folder: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))  # keep a reference: `serve` alone lets its variables be freed
    serve = loaded.serve
    batches = [
        serve(tf.constant(images[i : i + PREDICT_BATCH], tf.float32)) for i in range(0, len(images), PREDICT_BATCH)
    ]
    return np.concatenate([np.asarray(b) for b in batches])


def _run_openvino(folder: Path, images: np.ndarray) -> np.ndarray:
    compiled = CompiledIR(folder)
    (name,) = compiled.names
    return np.concatenate(
        [compiled(images[i : i + PREDICT_BATCH].astype(np.float32))[name] for i in range(0, len(images), PREDICT_BATCH)]
    )


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
