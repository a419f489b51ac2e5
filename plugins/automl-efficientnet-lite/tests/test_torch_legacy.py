"""The torch-free reader of legacy PyTorch files: the real bundled weights, and files it must refuse."""

from __future__ import annotations

import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from automl_efficientnet_lite.model import CONFIGS
from automl_efficientnet_lite.torch_legacy import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    TorchFileError,
    _unpickle,
    load_state_dict,
)
from automl_efficientnet_lite.weights import bundled_weights_file


def test_reads_the_bundled_lite0_state_dict() -> None:
    source = bundled_weights_file(CONFIGS["efficientnet_lite0"])
    assert source is not None
    state = load_state_dict(source)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert (state["_bn1.running_var"] > 0).all()
    assert sum(1 for key in state if key.endswith("_depthwise_conv.weight")) == 16


def _legacy_header() -> bytes:
    return pickle.dumps(MAGIC_NUMBER, 2) + pickle.dumps(PROTOCOL_VERSION, 2) + pickle.dumps({}, 2)


def test_refuses_a_file_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(_legacy_header() + f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(TorchFileError, match=r"refusing to load os\.system"):
        load_state_dict(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip, the newer format", b"\x80\x02K\x01."])
def test_refuses_files_that_are_not_legacy_pytorch(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(TorchFileError):
        load_state_dict(path)


def test_refuses_a_truncated_file(tmp_path: Path) -> None:
    source = bundled_weights_file(CONFIGS["efficientnet_lite0"])
    assert source is not None
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[:-1000])
    with pytest.raises(TorchFileError, match="truncated"):
        load_state_dict(truncated)


def test_a_file_cut_inside_a_storage_size_is_a_torch_file_error(tmp_path: Path) -> None:
    """Cut 4 bytes into the first storage's int64 element count: a short read, not a raw struct.error."""
    source = bundled_weights_file(CONFIGS["efficientnet_lite0"])
    assert source is not None
    with open(source, "rb") as handle:
        for _ in range(5):  # magic, protocol, system info, the state dict, the storage keys
            _unpickle(handle)
        first_count = handle.tell()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(source.read_bytes()[: first_count + 4])
    with pytest.raises(TorchFileError, match=r"truncated \(4 of 8 bytes\)"):
        load_state_dict(cut)


class _FakeStorage:
    """Stands for a torch storage while pickling: saved as a persistent id, as torch.save does."""

    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, shape: tuple, stride: tuple) -> None:
        self.args = (storage, offset, shape, stride, False, {})

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def _write_legacy(path: Path, tensors: dict[str, _FakeTensor], monkeypatch: pytest.MonkeyPatch) -> None:
    """A legacy torch.save file of `tensors`, written without torch: pickle finds stand-in torch modules."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    utils._rebuild_tensor_v2 = lambda *args: args
    utils._rebuild_tensor_v2.__module__, utils._rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storages = {t.args[0].key: t.args[0] for t in tensors.values()}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.values.size)
            return None

    with open(path, "wb") as handle:
        handle.write(_legacy_header())
        Pickler(handle, protocol=2).dump(tensors)
        pickle.dump(list(storages), handle, protocol=2)
        for storage in storages.values():
            handle.write(struct.pack("<q", storage.values.size) + storage.values.astype("<f4").tobytes())


def test_reads_a_strided_view_that_ends_on_the_last_element(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _FakeStorage("0", np.arange(7, dtype=np.float32))
    path = tmp_path / "view.pth"
    _write_legacy(
        path, {"t": _FakeTensor(storage, 1, (2, 3), (1, 2)), "empty": _FakeTensor(storage, 7, (0,), (1,))}, monkeypatch
    )
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["t"], np.arange(1, 7, dtype=np.float32).reshape(3, 2).T)
    assert state["empty"].shape == (0,)


@pytest.mark.parametrize(
    ("offset", "shape", "stride"),
    [(2, (2, 3), (1, 2)), (0, (2, 4), (4, 1)), (7, (1,), (1,)), (6, (2,), (-1,)), (-1, (1,), (1,))],
    ids=["offset-pushes-past-end", "shape-past-end", "offset-at-end", "negative-stride", "negative-offset"],
)
def test_refuses_a_tensor_reaching_outside_its_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int, shape: tuple, stride: tuple
) -> None:
    path = tmp_path / "outside.pth"
    _write_legacy(
        path, {"t": _FakeTensor(_FakeStorage("0", np.arange(7, dtype=np.float32)), offset, shape, stride)}, monkeypatch
    )
    with pytest.raises(TorchFileError, match=r"tensor t .*(reaches past its storage|invalid)"):
        load_state_dict(path)
