"""Bounded reads of real files: FIFOs, devices, folders and oversized files are refused without blocking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from automl.data.files import FileRefused, read_bounded


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x" * 1000)
    assert read_bounded(photo, max_bytes=1000) == b"x" * 1000


@pytest.mark.timeout(10)  # a FIFO must never block: a hang fails here instead of forever
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(FileRefused, match=r"not a regular file \(a FIFO"):
        read_bounded(tmp_path / "pipe.jpg")


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/", "a folder")])
def test_devices_and_folders_are_refused(path: str, kind: str) -> None:
    with pytest.raises(FileRefused, match=rf"not a regular file \({kind}\)"):
        read_bounded(path)


def test_a_file_over_the_cap_is_refused_from_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.truncate(3 * 1024**3)  # sparse: 3 GB declared, nothing written
    with pytest.raises(FileRefused, match=r"3,221,225,472 bytes, the limit is 100 MiB"):
        read_bounded(big)


def test_a_pseudo_file_reporting_size_zero_is_still_capped() -> None:
    assert len(read_bounded("/proc/self/status", max_bytes=1_000_000)) > 0
    with pytest.raises(FileRefused, match="more than 10 bytes"):
        read_bounded("/proc/self/status", max_bytes=10)
