"""The torch-free reader of legacy PyTorch files: the real bundled weights, and files it must refuse."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from automl_efficientnet_lite.model import CONFIGS
from automl_efficientnet_lite.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, TorchFileError, load_state_dict
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
