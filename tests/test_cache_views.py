"""Flip views in the bottleneck cache: real photos of animals10, real EfficientNet-Lite0 ImageNet weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.views import HFLIP, ORIGINAL, apply_view, entry_label, parse_label
from automl.data.dataset import ImageRecord, scan_dataset
from automl.data.images import decode_image
from automl.errors import CacheError, InputError

WEIGHTS = "default"


@pytest.fixture(scope="module")
def backbone():
    return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def records(animals10: Path) -> list[ImageRecord]:
    return scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=2).records


def test_flipped_features_are_the_backbones_features_of_the_flipped_photo(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cold = cache.ensure(backbone, WEIGHTS, ["all"], records, views=[ORIGINAL, HFLIP], progress=False)
    assert cold.computed == len(records) == 20  # each photo decoded and counted once, for both views
    assert cold.computed_by_cut == {"all": 20, "all@hflip": 20}

    sha1s = [r.sha1 for r in records[:4]]
    pixels = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in records[:4]])
    model = backbone.build(WEIGHTS)
    flipped = model.predict(pixels[:, :, ::-1].astype(np.float32), verbose=0)
    original = model.predict(pixels.astype(np.float32), verbose=0)
    cached = cache.load(backbone, WEIGHTS, "all", sha1s, view=HFLIP)
    np.testing.assert_allclose(cached, flipped, rtol=2e-3, atol=2e-3)  # float16 storage
    np.testing.assert_allclose(cache.load(backbone, WEIGHTS, "all", sha1s), original, rtol=2e-3, atol=2e-3)
    assert np.abs(flipped - original).max() > 0.1  # the flip changes the features: not the same entry twice

    again = BottleneckCache(tmp_path).ensure(backbone, WEIGHTS, ["all"], records, views=[HFLIP, ORIGINAL])
    assert (again.computed, again.reused, again.computed_by_cut) == (0, 20, {})


def test_a_flip_view_added_to_an_old_cache_computes_only_the_flips(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cache.ensure(backbone, WEIGHTS, ["all"], records, progress=False)  # an entry of before views: no view key
    (old,) = cache.store.parts(cache.key(backbone, WEIGHTS, "all"))
    assert "view" not in json.loads(old.manifest_path.read_text())  # older readers still read it
    assert old.path.parent.name.startswith("all-")

    added = cache.ensure(backbone, WEIGHTS, ["all"], records, views=[ORIGINAL, HFLIP], progress=False)
    assert (added.computed, added.computed_by_cut) == (20, {"all@hflip": 20})
    (flip_part,) = cache.store.parts(cache.key(backbone, WEIGHTS, "all", HFLIP))
    assert flip_part.manifest.view == HFLIP and flip_part.path.parent != old.path.parent


def test_a_missing_view_and_an_unknown_view_are_named(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cache.ensure(backbone, WEIGHTS, ["all"], records[:3], progress=False)
    with pytest.raises(CacheError, match="view 'hflip'"):
        cache.load(backbone, WEIGHTS, "all", [records[0].sha1], view=HFLIP)
    with pytest.raises(InputError, match="unknown cache view 'vflip'"):
        cache.ensure(backbone, WEIGHTS, ["all"], records[:3], views=["vflip"], progress=False)


def test_float16_loading_holds_the_stored_values_at_half_the_memory(tmp_path: Path, backbone, records) -> None:
    cache = BottleneckCache(tmp_path)
    cache.ensure(backbone, WEIGHTS, ["top"], records[:4], progress=False)
    sha1s = [r.sha1 for r in records[:4]]
    half = cache.load(backbone, WEIGHTS, "top", sha1s, dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half.astype(np.float32), cache.load(backbone, WEIGHTS, "top", sha1s))


def test_views_and_labels() -> None:
    pixels = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    assert np.array_equal(apply_view(HFLIP, pixels)[:, :, 0], pixels[:, :, -1])
    assert np.array_equal(apply_view(HFLIP, apply_view(HFLIP, pixels)), pixels)
    assert entry_label("top", ORIGINAL) == "top" and parse_label(entry_label("top", HFLIP)) == ("top", HFLIP)


def test_cache_ls_lists_a_flip_view_as_its_own_entry(tmp_path: Path, backbone, records) -> None:
    from typer.testing import CliRunner

    from automl.cli.main import app

    BottleneckCache(tmp_path).ensure(backbone, WEIGHTS, ["all"], records[:3], views=[ORIGINAL, HFLIP], progress=False)
    listed = CliRunner().invoke(app, ["cache", "ls", "--cache", str(tmp_path), "--json"])
    assert listed.exit_code == 0, listed.output
    cuts = {entry["cut"]: entry["rows"] for entry in json.loads(listed.output)["entries"]}
    assert cuts == {"all": 3, "all@hflip": 3}
