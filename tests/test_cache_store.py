"""The on-disk layer of the bottleneck cache: real Parquet parts, their manifests, damage and pruning (no Keras)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from automl.cache.store import CacheKey, PartStore, PartWriter, select_for_pruning
from automl.cli.main import app
from automl.errors import CacheError

KEY = CacheKey("mobilenet_v2", "random-seed0", "top", "tf-crop0.875-bilinear-224")


def _sha1s(count: int, start: int = 0) -> list[str]:
    return [f"{i:040x}" for i in range(start, start + count)]


def _read(store: PartStore, part, rows: list[int]) -> np.ndarray:
    out = np.empty((len(rows), *part.manifest.shape), dtype=np.float32)
    store.read_rows(part, np.asarray(rows), out, np.arange(len(rows)))
    return out


def test_part_round_trips_rows_ending_in_zeros_and_is_readable_by_pandas(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3, 3, 4)).astype(np.float32)
    values[1] = 0.0  # a blob of zero bytes only: the cell fastparquet would strip to b""
    values[2, -1, -1, -2:] = 0.0  # trailing zero bytes
    store = PartStore(tmp_path)
    part = store.write_part(KEY, _sha1s(5), values)

    assert part.manifest.dtype == "<f2" and part.manifest.shape == (3, 3, 4) and part.manifest.rows == 5
    assert store.sha1s(part) == _sha1s(5)
    np.testing.assert_array_equal(_read(store, part, [4, 1, 2]), values[[4, 1, 2]].astype(np.float16))

    frame = pd.read_parquet(part.path)
    assert list(frame.columns) == ["sha1", "blob"] and frame["sha1"].tolist() == _sha1s(5)
    decoded = np.frombuffer(frame["blob"].iloc[2], dtype="<f2").reshape(3, 3, 4)
    np.testing.assert_array_equal(decoded, values[2].astype(np.float16))
    manifest = json.loads(part.manifest_path.read_text())
    assert manifest["bytes"] == part.path.stat().st_size and len(manifest["sha256"]) == 64


def test_values_beyond_float16_stay_float32_and_pixels_are_uint8(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    large = np.array([[1.0e5, -3.0], [0.5, 7.0]], dtype=np.float32)
    part = store.write_part(KEY, _sha1s(2), large)
    assert part.manifest.dtype == "<f4"
    np.testing.assert_array_equal(_read(store, part, [0, 1]), large)

    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 4, 4, 3)).astype(np.float32)
    pixel_part = store.write_part(
        CacheKey(KEY.backbone, KEY.weights_id, "none", KEY.preprocessing_id), _sha1s(2), pixels
    )
    assert pixel_part.manifest.dtype == "|u1"
    np.testing.assert_array_equal(_read(store, pixel_part, [0, 1]), pixels)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: os.truncate(path, path.stat().st_size // 2), "truncated"),
        (lambda path: _flip_byte(path, path.stat().st_size // 2), "checksum mismatch"),
        (lambda path: path.unlink(), "missing"),
    ],
    ids=["truncated", "bit-flip", "deleted"],
)
def test_damaged_part_is_reported_and_deleted_and_reads_refuse_it(tmp_path: Path, damage, reason: str) -> None:
    store = PartStore(tmp_path)
    damaged = store.write_part(KEY, _sha1s(3), np.ones((3, 8), dtype=np.float32))
    intact = store.write_part(KEY, _sha1s(3, start=3), np.ones((3, 8), dtype=np.float32))
    damage(damaged.path)

    fresh = PartStore(tmp_path)  # another process: no memo of the parts it did not check
    with pytest.raises(CacheError, match=reason):
        fresh.sha1s(damaged)
    bad = fresh.check_all(delete=True)
    assert [(b.path, b.deleted) for b in bad] == [(damaged.path, True)] and reason in bad[0].reason
    assert [p.path for p in fresh.parts(KEY)] == [intact.path]
    assert not damaged.manifest_path.exists()


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_killed_writer_leaves_nothing_readable_and_prune_clears_its_files(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    committed = store.write_part(KEY, _sha1s(2), np.zeros((2, 4), dtype=np.float32))
    orphan = store.write_part(KEY, _sha1s(2, start=2), np.zeros((2, 4), dtype=np.float32))
    orphan.manifest_path.unlink()  # killed between the Parquet rename and the manifest
    temp = committed.path.parent / ".tmp-part-123.parquet"
    temp.write_bytes(b"PAR1 half written")  # killed while writing

    assert [p.path for p in store.parts(KEY)] == [committed.path]
    assert store.check_all() == []
    assert store.prune_stale() == []  # young files may belong to a live writer
    old = time.time() - 7200
    for path in (orphan.path, temp):
        os.utime(path, (old, old))
    assert sorted(store.prune_stale()) == sorted([orphan.path, temp])
    assert sorted(p.name for p in committed.path.parent.iterdir()) == sorted(
        [committed.path.name, committed.manifest_path.name]
    )


def test_pruning_selects_by_backbone_age_and_size(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    other = CacheKey("resnet50", "w", "all", "p")
    first = store.write_part(KEY, _sha1s(4), np.zeros((4, 256), dtype=np.float32))
    second = store.write_part(KEY, _sha1s(4, 4), np.zeros((4, 256), dtype=np.float32))
    third = store.write_part(other, _sha1s(4), np.zeros((4, 256), dtype=np.float32))
    parts = store.parts()
    now = max(p.manifest.created for p in parts)

    assert [p.path for p in select_for_pruning(parts, backbone="resnet50")] == [third.path]
    assert select_for_pruning(parts, older_than_s=3600, now=now) == []
    assert len(select_for_pruning(parts, older_than_s=0, now=now + 1)) == 3
    keep_two = second.manifest.bytes + third.manifest.bytes
    assert [p.path for p in select_for_pruning(parts, max_bytes=keep_two)] == [first.path]
    assert select_for_pruning(parts) == []


def test_cli_verify_reports_damage_exit_1_and_ls_prune_agree(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    damaged = store.write_part(KEY, _sha1s(3), np.ones((3, 8), dtype=np.float32))
    store.write_part(CacheKey("resnet50", "w", "all", "p"), _sha1s(2), np.ones((2, 8), dtype=np.float32))
    _flip_byte(damaged.path, 100)
    runner = CliRunner()

    result = runner.invoke(app, ["cache", "verify", "--cache", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] == 1 and [b["part"] for b in report["bad"]] == [str(damaged.path)]
    assert runner.invoke(app, ["cache", "verify", "--cache", str(tmp_path)]).exit_code == 0

    listed = json.loads(runner.invoke(app, ["cache", "ls", "--cache", str(tmp_path), "--json"]).output)
    assert [(e["backbone"], e["rows"]) for e in listed["entries"]] == [("resnet50", 2)]
    pruned = runner.invoke(app, ["cache", "prune", "--cache", str(tmp_path), "--backbone", "resnet50", "--json"])
    assert pruned.exit_code == 0 and len(json.loads(pruned.output)["parts"]) == 1
    assert store.parts() == []


def test_url_roots_are_refused_with_a_hint() -> None:
    with pytest.raises(CacheError, match="URLs are not supported"):
        PartStore("s3://bucket/cache")


def test_an_unwritable_root_is_a_cache_error_naming_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "not-a-folder"
    root.write_text("a file where the cache folder should be")
    store = PartStore(root)
    with pytest.raises(CacheError, match="cannot write to the bottleneck cache") as caught:
        store.write_part(KEY, _sha1s(1), np.zeros((1, 4), dtype=np.float32))
    assert str(root) in str(caught.value) and "AUTOML_CACHE" in str(caught.value)
    with pytest.raises(CacheError, match="not-a-folder"), store.writer_lock(KEY):
        pass


def test_a_failed_part_write_is_raised_at_the_next_flush_not_at_close(tmp_path: Path) -> None:
    """A full disk must stop the extraction at the next part, not after every image has been computed."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")  # every write_part fails with an OSError
    writer = PartWriter(PartStore(blocked), part_rows=2)
    writer.add(KEY, _sha1s(2), np.zeros((2, 4), dtype=np.float32))  # first part: its write fails in the background
    with pytest.raises(CacheError, match="cannot write to the bottleneck cache"):
        writer.add(KEY, _sha1s(2, start=2), np.zeros((2, 4), dtype=np.float32))
    writer.add(KEY, _sha1s(1, start=4), np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(CacheError, match="blocked"):
        writer.close()  # the row buffered after the failure is not silently dropped either


def test_the_writer_commits_every_row_with_one_write_in_flight(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    writer = PartWriter(store, part_rows=3)
    values = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    for row in range(10):
        writer.add(KEY, _sha1s(1, start=row), values[row : row + 1])
    writer.close()
    parts = store.parts(KEY)
    assert sorted(p.manifest.rows for p in parts) == [1, 3, 3, 3]
    assert writer.bytes_written == sum(p.manifest.bytes for p in parts)
    assert sorted(sha1 for p in parts for sha1 in store.sha1s(p)) == _sha1s(10)
