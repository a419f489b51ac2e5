"""The exported model on OpenVINO: an IR beside `model.keras`, and the engine `predict` and `serve` run.

`export_runtimes` converts the model's SavedModel into `model/openvino/` (`model.xml`, `model.bin`,
`manifest.json`; see `automl.engines.openvino`) and checks it against Keras like the other runtimes.
`ExportedModel.load(path, engine=...)` then runs it: `keras` always runs Keras; `openvino` runs the IR (an
error when the folder has none); `auto` runs the IR when the folder has a whole one, else Keras.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from automl.engines import openvino as ov_engine
from automl.engines import openvino_installed
from automl.errors import InputError

ExportedEngine = Literal["auto", "keras", "openvino"]
EXPORTED_ENGINES: tuple[ExportedEngine, ...] = ("auto", "keras", "openvino")
IR_DIR = "openvino"


def export_ir(saved_model: Path, model_folder: Path) -> Path:
    """Convert the exported SavedModel into `model_folder/openvino/` (replacing an older IR atomically)."""
    folder = model_folder / IR_DIR

    def copy_saved_model(target: Path) -> None:
        shutil.copytree(saved_model, target)

    ov_engine.ensure_ir(folder, copy_saved_model, replace=True)
    return folder


def ir_size(model_folder: Path) -> int:
    """Bytes of the IR's files (the weights are float32, as in the SavedModel)."""
    return sum(f.stat().st_size for f in (model_folder / IR_DIR).iterdir() if f.is_file())


def openvino_forward(model_folder: Path, engine: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """float32 pixels → probabilities on the folder's IR, or None when `engine` means Keras here."""
    if engine not in EXPORTED_ENGINES:
        raise InputError(f"--engine {engine!r} is not known", hint=f"choose one of {', '.join(EXPORTED_ENGINES)}")
    folder = model_folder / IR_DIR
    if engine == "keras" or (engine == "auto" and not (openvino_installed() and folder.exists())):
        return None
    if not openvino_installed():
        raise InputError("--engine openvino: the openvino package is not installed", hint="pip install openvino")
    problem = damage(folder)
    if problem is not None:
        if engine == "auto":
            return None
        raise InputError(
            f"{folder}: no usable OpenVINO model ({problem})",
            hint="use --engine keras, or export again (`ExportedModel.export_runtimes`, run by every search)",
        )
    compiled = ov_engine.CompiledIR(folder)
    (name,) = compiled.names
    return lambda pixels: compiled(pixels)[name]


def damage(folder: Path) -> str | None:
    """Why the IR folder cannot be used, or None (`automl.engines.openvino.damage`, with absence)."""
    return "no IR folder" if not folder.is_dir() else ov_engine.damage(folder)
