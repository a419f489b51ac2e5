"""An OpenVINO IR of a Keras model: converted once, kept on disk, checked before use, compiled as measured.

Conversion goes through a TensorFlow SavedModel (`model.export(..., format="tf_saved_model")`, then
`openvino.convert_model`); Keras' ONNX export of these models gave a graph ONNX Runtime refused. Weights stay
float32 in the IR (`compress_to_fp16=False`) and the CPU runs float32 (`INFERENCE_PRECISION_HINT`, both
configs): on a CPU with bfloat16 instructions (this Zen 4 has them) OpenVINO would otherwise compute in
bfloat16 and drift from Keras by far more than the cache's float16 storage rounds.

An IR folder holds `model.xml`, `model.bin` and `manifest.json` (size and SHA-256 of both, written last). It
is built in a staging sibling and renamed into place, so readers see a whole IR or none; a folder whose
manifest is missing or disagrees with its files (a crash of another tool, a disk error, a hand edit) is moved
aside and converted again. Two processes converting the same IR at once both succeed: the second rename loses
and its copy is dropped.
"""

from __future__ import annotations

import hashlib
import json
import queue
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

IR_XML = "model.xml"
IR_BIN = "model.bin"
MANIFEST = "manifest.json"
SAVED_MODEL_DIR = "saved_model"
T = TypeVar("T")

LATENCY_CONFIG: dict[str, str] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
"""For one batch at a time (`CompiledIR.__call__`: the exported model behind `predict` and `serve`): one stream
on every core, so a single request finishes soonest."""
STREAM_CONFIG: dict[str, str] = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
"""For many batches (`CompiledIR.stream`: feature extraction). Measured with benchmarks/openvino_settings.py
(RESULTS.md), EfficientNet-Lite0 on 2 shared cores: THROUGHPUT's streams (one core each), fed several batches at
once, gave 163-171 images per CPU-second against 147-150 for LATENCY's one stream on both cores, and 27-30
against 12-19 images/s of wall time while other jobs loaded the machine (a stream never waits for a descheduled
sibling thread at a barrier). Fed one synchronous batch at a time THROUGHPUT uses one core, which is why the
issue's side-by-side run (sync calls) found LATENCY faster."""
STREAM_CHUNK = 8
"""Most images per inference request in `CompiledIR.stream`: larger batches are split, their results joined. Batch 8
was the fastest setting both on 2 shared cores (Lite0, THROUGHPUT: 30.1 images/s against 26.9 for batch 32) and on
2 idle ones (Lite2: 176-179 against 159-162 for batch 32, either hint): smaller requests keep both streams busy to
the end of a batch and their activations in the CPU's caches."""


class ConversionError(RuntimeError):
    """The model could not be exported or converted; the caller falls back to TensorFlow."""


def version() -> str:
    """OpenVINO's release (e.g. `2026.4.1`): IR folders are named by it, as a new release may convert differently."""
    import openvino

    return openvino.__version__.split("-")[0]


def damage(folder: Path) -> str | None:
    """Why the IR in `folder` cannot be used (missing, partial, altered), or None when it is whole."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        for name in (IR_XML, IR_BIN):
            path = folder / name
            if path.stat().st_size != manifest[name]["bytes"]:
                return f"{name} has {path.stat().st_size} bytes, its manifest says {manifest[name]['bytes']}"
            if _sha256(path) != manifest[name]["sha256"]:
                return f"{name} does not match the SHA-256 in its manifest"
    except FileNotFoundError as exc:
        return f"{Path(exc.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    return None


def ensure_ir(folder: Path, export: Callable[[Path], None], *, replace: bool = False) -> bool:
    """Make `folder` hold a whole IR, converting only when it does not (or always with `replace`); True when
    it converted now.

    `export(path)` writes the TensorFlow SavedModel to convert at `path` (called only when converting).
    Raises ConversionError when the export or the conversion fails.
    """
    if not replace and folder.exists() and damage(folder) is None:
        return False
    if folder.exists():  # damaged or replaced: keep readers of the old path from seeing a half-replaced folder
        aside = folder.with_name(f".{folder.name}.damaged.{secrets.token_hex(4)}")
        folder.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        try:
            export(staging / SAVED_MODEL_DIR)
            write_ir(staging / SAVED_MODEL_DIR, staging)
        except Exception as exc:  # TF and OpenVINO raise many types; the caller falls back either way
            raise ConversionError(
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            ) from exc
        shutil.rmtree(staging / SAVED_MODEL_DIR)
        try:
            staging.rename(folder)
        except OSError:  # another process put a whole IR there first
            if damage(folder) is not None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def write_ir(saved_model: Path, folder: Path) -> None:
    """Convert a SavedModel into `folder`'s `model.xml` + `model.bin` (float32 weights) and their manifest."""
    import openvino

    model = openvino.convert_model(str(saved_model))
    openvino.save_model(model, str(folder / IR_XML), compress_to_fp16=False)
    manifest: dict[str, object] = {
        name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)} for name in (IR_XML, IR_BIN)
    }
    manifest["openvino"] = version()
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


class CompiledIR:
    """An IR compiled for this CPU: a batch in, {output name: float32 array} out.

    `config` is `LATENCY_CONFIG` by default; pass `STREAM_CONFIG` when `stream` will feed it. With
    `uint8_input`, the input takes uint8 pixels and OpenVINO converts them inside the graph (a float32 copy of
    each batch in NumPy would cost a pass over memory per batch). Direct calls are serialised by a lock (one
    infer request runs one batch at a time); `stream` keeps several batches in flight.
    """

    def __init__(self, folder: Path, *, uint8_input: bool = False, config: dict[str, str] | None = None) -> None:
        import openvino

        core = _core()
        model = core.read_model(str(folder / IR_XML))
        if uint8_input:
            processing = openvino.preprocess.PrePostProcessor(model)
            processing.input().tensor().set_element_type(openvino.Type.u8)
            model = processing.build()
        self.compiled = core.compile_model(model, "CPU", LATENCY_CONFIG if config is None else config)
        self.names = [_output_name(output) for output in self.compiled.outputs]
        self._request = self.compiled.create_infer_request()
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) + 1
        """Batches `stream` keeps in flight: one per stream, and one queued so no stream idles while this thread
        collects a result and submits the next batch."""
        self._lock = threading.Lock()

    def __call__(self, inputs: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """{name: float32 array} of the `outputs` named (default: all) for one batch."""
        wanted = self._positions(outputs)
        with self._lock:
            results = self._request.infer(np.ascontiguousarray(inputs))
            return {name: np.array(results[i], dtype=np.float32) for name, i in wanted.items()}

    def stream(
        self,
        items: Iterable[T],
        inputs: Callable[[T], np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        chunk: int = STREAM_CHUNK,
    ) -> Iterator[tuple[T, dict[str, np.ndarray]]]:
        """Each item with its `outputs` (default: all), in completion order, keeping `requests` requests in flight.

        An item's batch goes to OpenVINO in requests of at most `chunk` images (`STREAM_CHUNK`), joined again
        before the item is yielded. While OpenVINO computes (its threads release the GIL), this thread fetches
        and submits the next request, so the caller's work between batches (decoding, stacking, writing)
        overlaps the inference.
        """
        import openvino

        wanted = self._positions(outputs)
        finished: queue.SimpleQueue[tuple[_Pieces[T], int, dict[str, np.ndarray]]] = queue.SimpleQueue()

        def collect(request: Any, job: tuple[_Pieces[T], int]) -> None:
            values = {name: request.get_output_tensor(i).data.copy() for name, i in wanted.items()}
            finished.put((*job, values))

        def joined() -> Iterator[tuple[T, dict[str, np.ndarray]]]:
            while not finished.empty():
                pieces, start, values = finished.get()
                if pieces.add(start, values):
                    yield pieces.item, pieces.join()

        jobs = openvino.AsyncInferQueue(self.compiled, self.requests)
        jobs.set_callback(collect)
        for item in items:
            batch = np.ascontiguousarray(inputs(item))
            starts = range(0, len(batch), chunk)
            pieces = _Pieces(item, len(starts))
            for start in starts:
                jobs.start_async(batch[start : start + chunk], (pieces, start))  # waits while every request is busy
                yield from joined()
        jobs.wait_all()
        yield from joined()

    def _positions(self, outputs: Sequence[str] | None) -> dict[str, int]:
        names = self.names if outputs is None else outputs
        unknown = set(names) - set(self.names)
        if unknown:
            raise KeyError(f"the IR has no output {sorted(unknown)}; it has {self.names}")
        return {name: self.names.index(name) for name in names}


class _Pieces(Generic[T]):
    """One item's outputs as its chunks finish, in any order; whole once every chunk has come back."""

    def __init__(self, item: T, count: int) -> None:
        self.item, self.count = item, count
        self.values: dict[int, dict[str, np.ndarray]] = {}

    def add(self, start: int, values: dict[str, np.ndarray]) -> bool:
        """Keep one chunk's outputs; True when it was the last one."""
        self.values[start] = values
        return len(self.values) == self.count

    def join(self) -> dict[str, np.ndarray]:
        chunks = [self.values[start] for start in sorted(self.values)]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _output_name(output: Any) -> str:
    """The output's signature key (a SavedModel names outputs by the Keras model's output dict keys)."""
    names = output.get_names()
    return min(names, key=len) if names else output.get_any_name()


_cores: list[Any] = []


def _core() -> Any:
    """One `openvino.Core` per process (creating one loads the plugins)."""
    import openvino

    if not _cores:
        _cores.append(openvino.Core())
    return _cores[0]


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
