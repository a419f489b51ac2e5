"""Reads tensors from a legacy (non-zip, pre-1.6) PyTorch `torch.save` file, without torch.

The format is five pickles in a row: a magic number, the protocol version, system info, the object
itself (tensors refer to storages by persistent id), and the list of storage keys; the raw storages
follow, each an int64 element count and the little-endian data. The unpickler here only resolves the
few names such a state dict needs (an `OrderedDict`, the tensor rebuild function, storage types), so a
crafted file cannot run code.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a legacy PyTorch tensor file this reader accepts."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: type
    size: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _OrderedDict(dict):
    """Stands for `collections.OrderedDict`; takes the `_metadata` attribute torch attaches to state dicts."""


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(d) for d in shape), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): _OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise TorchFileError(f"refusing to load {module}.{name} (only tensors and dicts are allowed)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"unexpected storage type {storage_type!r}")
        return _Storage(str(key), storage_type.dtype, int(size))


def _unpickle(handle: IO[bytes]) -> Any:
    return _RestrictedUnpickler(handle).load()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """`{name: array}` from a legacy `torch.save(state_dict)` file; TorchFileError for anything else."""
    with open(path, "rb") as handle:
        try:
            if _unpickle(handle) != MAGIC_NUMBER:
                raise TorchFileError(f"{path}: not a legacy PyTorch file (bad magic number)")
            if _unpickle(handle) != PROTOCOL_VERSION:
                raise TorchFileError(f"{path}: unsupported PyTorch protocol version")
            _unpickle(handle)  # system info: endianness and type sizes, little-endian on every platform we run
            tree = _unpickle(handle)
            keys = _unpickle(handle)
        except TorchFileError:
            raise
        except (pickle.UnpicklingError, EOFError, struct.error, TypeError, ValueError) as exc:
            # TypeError, ValueError: a tensor or storage built from arguments of the wrong kind
            raise TorchFileError(f"{path}: not a legacy PyTorch file ({exc})") from exc
        if not isinstance(tree, dict):
            raise TorchFileError(f"{path}: holds a {type(tree).__name__}, not a state dict")
        storages = {ref.storage.key: ref.storage for ref in tree.values() if isinstance(ref, _TensorRef)}
        data: dict[str, np.ndarray] = {}
        for key in keys:
            storage = storages.get(key)
            if storage is None:
                raise TorchFileError(f"{path}: storage {key} is listed but no tensor uses it")
            (count,) = struct.unpack("<q", _read_exactly(handle, 8, path, key))
            if count != storage.size:
                raise TorchFileError(f"{path}: storage {key} holds {count} elements, its tensors say {storage.size}")
            raw = _read_exactly(handle, count * np.dtype(storage.dtype).itemsize, path, key)
            data[key] = np.frombuffer(raw, dtype=storage.dtype)
    return {
        name: _materialise(ref, data[ref.storage.key], path, name)
        for name, ref in tree.items()
        if isinstance(ref, _TensorRef)
    }


def _read_exactly(handle: IO[bytes], size: int, path: str | Path, key: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise TorchFileError(f"{path}: storage {key} is truncated ({len(data)} of {size} bytes)")
    return data


def _materialise(ref: _TensorRef, flat: np.ndarray, path: str | Path, name: str) -> np.ndarray:
    """The tensor's (offset, shape, stride) view of its storage, copied; refused when it reaches outside it."""
    if len(ref.shape) != len(ref.stride) or min((ref.offset, *ref.shape, *ref.stride)) < 0:
        raise TorchFileError(
            f"{path}: tensor {name} has an invalid offset {ref.offset}, shape {ref.shape} or stride {ref.stride}"
        )
    last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride, strict=True))
    if 0 not in ref.shape and last >= flat.size:
        raise TorchFileError(
            f"{path}: tensor {name} (offset {ref.offset}, shape {ref.shape}, stride {ref.stride}) "
            f"reaches past its storage of {flat.size} elements"
        )
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.array(view)
