"""Which inference engine runs a Keras graph: TensorFlow (always there) or OpenVINO (faster on CPUs).

`resolve(engine)` turns the user's choice (`auto`, `openvino`, `tensorflow`; recipe `resources.engine`,
`--engine`) into the engine to use: `auto` is OpenVINO when the `openvino` package imports, else TensorFlow.
`automl.engines.openvino` converts a Keras model once into an OpenVINO IR kept on disk and runs it.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from automl.errors import InputError

EngineChoice = Literal["auto", "openvino", "tensorflow"]
ENGINES: tuple[EngineChoice, ...] = ("auto", "openvino", "tensorflow")


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def resolve(engine: str) -> Literal["openvino", "tensorflow"]:
    """The engine to use for `engine`; InputError for an unknown name or `openvino` when it is not installed."""
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r} is not known", hint=f"choose one of {', '.join(ENGINES)}")
    if engine == "tensorflow":
        return "tensorflow"
    if openvino_installed():
        return "openvino"
    if engine == "openvino":
        raise InputError(
            "engine 'openvino' asked but the openvino package is not installed", hint="pip install openvino"
        )
    return "tensorflow"
