"""BottleneckCache end to end: real photos of animals10, a real Keras MobileNetV2 (random weights), real Parquet."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import ImageRecord, scan_dataset
from automl.data.images import decode_image
from automl.errors import CacheError

WEIGHTS = "none"


@pytest.fixture(scope="module")
def backbone():
    return get_backbone("mobilenet_v2")


@pytest.fixture(scope="module")
def records(animals10: Path) -> list[ImageRecord]:
    """40 real photos (4 a class), most of them RGBA PNGs."""
    records = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=4).records
    assert len({r.sha1 for r in records}) == len(records) == 40
    return records


def _parts(cache: BottleneckCache, backbone, cut: str):
    return cache.store.parts(cache.key(backbone, WEIGHTS, cut))


def test_features_match_the_model_and_a_warm_ensure_computes_nothing(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cold = cache.ensure(backbone, WEIGHTS, ["all", "top"], records, progress=False)
    assert (cold.computed, cold.reused, cold.failed) == (40, 0, [])
    assert cold.computed_by_cut == {"all": 40, "top": 40} and cold.bytes > 0

    order = [r.sha1 for r in reversed(records)]
    features = cache.load(backbone, WEIGHTS, "all", order)
    assert features.dtype == np.float32 and features.shape == (40, backbone.feature_size)
    sample = list(reversed(records))[:4]
    pixels = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in sample]).astype(np.float32)
    expected = backbone.build(WEIGHTS).predict(pixels, verbose=0)
    np.testing.assert_allclose(features[:4], expected, rtol=2e-3, atol=2e-3)  # float16 storage
    assert cache.load(backbone, WEIGHTS, "top", order[:3]).shape == (3, *backbone.cut_points()["top"].output_shape)

    warm = BottleneckCache(tmp_path).ensure(backbone, WEIGHTS, ["top", "all"], records, progress=False)
    assert (warm.computed, warm.reused, warm.bytes, warm.computed_by_cut) == (0, 40, 0, {})


def test_new_images_and_a_new_cut_compute_only_what_is_missing(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    assert cache.ensure(backbone, WEIGHTS, ["all"], records[:30], progress=False).computed == 30

    grown = cache.ensure(backbone, WEIGHTS, ["all"], records, progress=False)
    assert (grown.computed, grown.reused, grown.computed_by_cut) == (10, 30, {"all": 10})

    with_cut = cache.ensure(backbone, WEIGHTS, ["all", "half"], records, progress=False)
    assert (with_cut.computed, with_cut.computed_by_cut) == (40, {"half": 40})
    assert sum(p.manifest.rows for p in _parts(cache, backbone, "all")) == 40


def test_a_corrupt_part_is_reported_and_only_its_images_recomputed(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cache.ensure(backbone, WEIGHTS, ["all"], records[:25], progress=False)
    cache.ensure(backbone, WEIGHTS, ["all"], records, progress=False)
    first, second = _parts(cache, backbone, "all")
    before = cache.load(backbone, WEIGHTS, "all", [r.sha1 for r in records])
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))

    reopened = BottleneckCache(tmp_path)  # a new search process: nothing verified yet
    with pytest.raises(CacheError, match="checksum mismatch"):
        reopened.load(backbone, WEIGHTS, "all", [r.sha1 for r in records])
    repaired = reopened.ensure(backbone, WEIGHTS, ["all"], records, progress=False)
    assert [entry.split(":")[0] for entry in repaired.repaired] == [str(first.path)]
    assert (repaired.computed, repaired.reused) == (25, 15)
    assert second.path.exists() and not first.path.exists()
    after = reopened.load(backbone, WEIGHTS, "all", [r.sha1 for r in records])
    np.testing.assert_allclose(after, before, rtol=1e-2, atol=1e-2)


def test_unreadable_images_are_reported_and_skipped(tmp_path: Path, backbone, records) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    truncated = photos / "truncated.jpg"
    good_jpeg = next(r.path for r in records if r.path.read_bytes()[:2] == b"\xff\xd8")
    truncated.write_bytes(good_jpeg.read_bytes()[:400])
    text = photos / "notes.png"
    text.write_text("not a photo")
    vanished = photos / "vanished.jpg"
    broken = [
        ImageRecord(truncated, "a" * 40, 0, "train"),
        ImageRecord(text, "b" * 40, 0, "train"),
        ImageRecord(vanished, "c" * 40, 0, "train"),
    ]
    cache = BottleneckCache(tmp_path / "cache")
    stats = cache.ensure(backbone, WEIGHTS, ["all"], [*records[:3], *broken], progress=False)

    assert stats.computed == 3
    reasons = {f.path: f.reason for f in stats.failed}
    assert set(reasons) == {truncated, text, vanished}
    assert "truncated" in reasons[truncated] and "text" in reasons[text] and "cannot read" in reasons[vanished]
    assert cache.load(backbone, WEIGHTS, "all", [r.sha1 for r in records[:3]]).shape == (3, backbone.feature_size)
    with pytest.raises(CacheError, match="1 of 1 images have no 'all' features"):
        cache.load(backbone, WEIGHTS, "all", ["a" * 40])


@pytest.mark.slow
def test_ray_executor_shards_over_two_nodes(tmp_path: Path, backbone, records) -> None:
    """A real two-node Ray cluster on this machine: each node extracts its share into the shared folder."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    try:
        cache = BottleneckCache(tmp_path)
        stats = cache.ensure(backbone, WEIGHTS, ["all"], records[:16], progress=False)  # auto: 2 nodes → ray
        writers = {p.path.name for p in _parts(cache, backbone, "all")}
        late = cache.ensure(backbone, WEIGHTS, ["all"], records, progress=False, deadline=time.time() - 1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert (stats.computed, stats.failed) == (16, [])
    assert len(writers) == 2  # one part per node
    assert cache.load(backbone, WEIGHTS, "all", [r.sha1 for r in records[:16]]).shape == (16, backbone.feature_size)
    assert (late.interrupted, late.computed, late.remaining, late.reused) == (True, 0, 24, 16), "each node stopped"


def test_the_none_cut_stores_the_decoded_pixels_as_uint8_without_a_forward_pass(
    tmp_path: Path, backbone, records, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*_args, **_kwargs):
        raise AssertionError("a `none`-only extraction must not build or run the model")

    monkeypatch.setattr("automl.cache.extract.built_model", no_model)
    monkeypatch.setattr("automl.cache.extract.frozen_forward", no_model)
    cache = BottleneckCache(tmp_path)
    sample = records[:5]
    stats = cache.ensure(backbone, WEIGHTS, ["none"], sample, progress=False)
    assert (stats.computed, stats.computed_by_cut) == (5, {"none": 5})

    parts = _parts(cache, backbone, "none")
    assert {p.manifest.dtype for p in parts} == {"|u1"}
    expected = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in sample])
    loaded = cache.load(backbone, WEIGHTS, "none", [r.sha1 for r in sample])
    assert loaded.shape == expected.shape == (5, *backbone.cut_points()["none"].output_shape)
    np.testing.assert_array_equal(loaded, expected.astype(np.float32))


def test_load_splits_reads_each_part_once_for_every_split(tmp_path: Path, backbone, records, monkeypatch) -> None:
    cache = BottleneckCache(tmp_path)
    cache.ensure(backbone, WEIGHTS, ["all"], records[:6], progress=False)
    cache.ensure(backbone, WEIGHTS, ["all"], records[:10], progress=False)
    assert len(_parts(cache, backbone, "all")) == 2
    splits = {"train": [r.sha1 for r in records[8:2:-1]], "val": [r.sha1 for r in records[:3]], "test": []}
    separately = {name: cache.load(backbone, WEIGHTS, "all", sha1s) for name, sha1s in splits.items()}

    reads: list[Path] = []
    read_rows = cache.store.read_rows
    monkeypatch.setattr(cache.store, "read_rows", lambda part, *args: (reads.append(part.path), read_rows(part, *args)))
    together = cache.load_splits(backbone, WEIGHTS, "all", splits)

    assert sorted(reads) == sorted(p.path for p in _parts(cache, backbone, "all"))  # both parts, once each
    assert list(together) == ["train", "val", "test"]
    for name, features in separately.items():
        np.testing.assert_array_equal(together[name], features)
    assert together["test"].shape == (0, backbone.feature_size)
    with pytest.raises(CacheError, match="1 of 10 images have no 'all' features"):
        cache.load_splits(backbone, WEIGHTS, "all", {"train": splits["train"], "val": [*splits["val"], "d" * 40]})


def _stalls_until(deadline: float, after: int):
    """An `on_advance` that, once `after` images are handled, waits for `deadline` to pass: the deadline then
    passes mid-way through the extraction, at a known batch (the batches before it are in flight or done)."""
    handled = [0]

    def on_advance(count: int) -> None:
        handled[0] += count
        if handled[0] >= after:
            time.sleep(max(0.0, deadline - time.time()) + 0.05)

    return on_advance


@pytest.mark.parametrize("engine", ["tensorflow", "openvino"])
def test_a_deadline_stops_extraction_with_its_parts_kept_and_the_next_ensure_computes_the_rest(
    tmp_path: Path, backbone, records, engine: str
) -> None:
    BottleneckCache(tmp_path / "warm").ensure(backbone, WEIGHTS, ["all"], records[:1], progress=False, engine=engine)
    cache = BottleneckCache(tmp_path / "cache")
    deadline = time.time() + 5.0  # far beyond the first two batches of 8 once the model is built (above)
    first = cache.ensure(
        backbone,
        WEIGHTS,
        ["all", "top"],
        records,
        progress=False,
        engine=engine,
        batch_size=8,
        deadline=deadline,
        on_advance=_stalls_until(deadline, after=16),
    )
    assert first.interrupted and first.computed == 8 and first.remaining == 32, "batch 2 was not started"
    assert sum(p.manifest.rows for p in _parts(cache, backbone, "all")) == 8, "the finished batch is committed"

    rest = cache.ensure(backbone, WEIGHTS, ["all", "top"], records, progress=False, engine=engine)
    assert (rest.interrupted, rest.computed, rest.reused) == (False, 32, 8)
    for cut in ("all", "top"):
        stored = [sha1 for part in _parts(cache, backbone, cut) for sha1 in cache.store.sha1s(part)]
        assert sorted(stored) == sorted(r.sha1 for r in records), f"{cut}: every image once, no duplicates"
    assert cache.store.check_all(delete=False) == [], "`cache verify` finds nothing wrong"


def test_a_deadline_already_passed_computes_nothing_and_leaves_no_part(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    stats = cache.ensure(backbone, WEIGHTS, ["all"], records, progress=False, deadline=time.time() - 1)
    assert (stats.interrupted, stats.computed, stats.remaining) == (True, 0, 40)
    assert _parts(cache, backbone, "all") == []
    assert cache.missing(backbone, WEIGHTS, ["all"], records) == 40
