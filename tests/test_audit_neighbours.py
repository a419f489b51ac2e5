"""automl.audit.neighbours on real Lite0 pooled vectors: re-encoded copies are near-duplicates, photos of another
set are outliers, and a near-duplicate grouping keeps every pair in one split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASETS
from PIL import Image

from automl.audit.grouping import dataset_for_recipe, pooled_vectors
from automl.audit.neighbours import (
    NEAR_DUPLICATE_COSINE,
    OUTLIER_NEIGHBOURS,
    centred_unit_rows,
    group_labels,
    isolation,
    knn_similarity,
    pairs_above,
)
from automl.backbones.registry import get_backbone
from automl.cache import BottleneckCache
from automl.data.dataset import scan_dataset
from automl.data.images import decode_image
from automl.recipe import load_recipe

BACKBONE = get_backbone("efficientnet_lite0")


def vectors(name: str, **options: object):  # -> (x, records)
    dataset = scan_dataset(DATASETS / name, train=0.7, val=0.15, test=0.15, seed=0, **options)
    return pooled_vectors(BottleneckCache(), BACKBONE, "default", dataset.records)


def test_a_re_encoded_copy_is_a_near_duplicate_and_other_photos_are_not(tmp_path: Path) -> None:
    x, records = vectors("animals10", max_per_class=20)
    copies = tmp_path / "copies" / "any"
    copies.mkdir(parents=True)
    chosen = list(range(0, len(records), 20))  # one photo a class
    for index in chosen:
        buffer = io.BytesIO()  # the picture as the backbone sees it (alpha on white), re-encoded as JPEG
        Image.fromarray(decode_image(records[index].path.read_bytes())).save(buffer, "JPEG", quality=75)
        (copies / f"{index}.jpg").write_bytes(buffer.getvalue())
    copied = scan_dataset(copies.parent, train=0.7, val=0.15, test=0.15, seed=0, allow_unusable=True)
    y, kept = pooled_vectors(BottleneckCache(tmp_path / "cache"), BACKBONE, "default", copied.records)
    assert len(kept) == len(chosen)
    both = np.concatenate([x, y])
    pairs = pairs_above(centred_unit_rows(both), NEAR_DUPLICATE_COSINE)
    found = {(i, j - len(x)) for i, j, _ in pairs if j >= len(x) > i}
    expected = {(int(Path(kept[n].path).stem), n) for n in range(len(kept))}
    # a copy pairs with its original only; most are found (JPEG alone loses some: the 5th percentile of a
    # quality-60 copy's cosine is 0.78-0.89, benchmarks/RESULTS.md, the price of a threshold without false pairs)
    assert found <= expected and len(found) >= 0.8 * len(expected), (found, expected)
    labels = group_labels(len(both), pairs)
    assert all(labels[i] == labels[j] for i, j, _ in pairs)


def test_photos_of_another_set_are_outliers_and_the_set_s_own_rarely() -> None:
    x, _ = vectors("animals10")
    z, _ = vectors("trashnet", max_per_class=5)
    mean = x.mean(axis=0)
    own = isolation(centred_unit_rows(x, mean))
    theirs, _ = knn_similarity(centred_unit_rows(z, mean), centred_unit_rows(x, mean), OUTLIER_NEIGHBOURS)
    assert own.outlier.mean() < 0.03
    assert (theirs < own.cutoff).mean() >= 0.9


def test_grouping_keeps_every_near_duplicate_pair_in_one_split(tmp_path: Path) -> None:
    recipe_path = tmp_path / "r.yaml"
    recipe = {"name": "a", "data": {"folder": str(DATASETS / "animals10"), "group_near_duplicates": True}}
    recipe_path.write_text(json.dumps(recipe), encoding="utf-8")
    x, records = vectors("animals10")
    pairs = pairs_above(centred_unit_rows(x), NEAR_DUPLICATE_COSINE)
    assert any(records[i].split != records[j].split for i, j, _ in pairs)  # the hash split separates some

    grouped = dataset_for_recipe(load_recipe(recipe_path))
    split = {record.sha1: record.split for record in grouped.records}
    assert all(split[records[i].sha1] == split[records[j].sha1] for i, j, _ in pairs)
    assert len(grouped.groups) >= 2 * len({grouped.group_key(records[i].sha1) for i, _, _ in pairs}) > 0


@pytest.mark.parametrize("count", [1, 2100])
def test_pairs_are_found_across_row_blocks(count: int) -> None:
    rng = np.random.default_rng(0)
    unit = centred_unit_rows(rng.normal(size=(count + 1, 16)))
    unit[-1] = unit[0]  # a copy of the first row in the last block
    assert (0, count, pytest.approx(1.0, abs=1e-5)) in pairs_above(unit, 0.999)
