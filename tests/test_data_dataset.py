"""scan_dataset: every odd folder case reported, the hash split's promises, and stat-only rescans."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from image_cases import jpeg, odd_dataset, truncated_jpeg
from PIL import Image

from automl.data import dataset as dataset_module
from automl.data.dataset import Dataset, scan_dataset
from automl.errors import DatasetError
from automl.recipe import parse_recipe

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@pytest.fixture(autouse=True)
def isolated_scan_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scan indexes go to the user cache folder: give each test its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def scan(root: Path, seed: int = 0, **options: object) -> Dataset:
    return scan_dataset(root, **FRACTIONS, seed=seed, **options)


def tiny_png(seed: int) -> bytes:
    """A distinct 4x4 PNG per seed: many images scan in milliseconds."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_classes(root: Path, sizes: dict[str, int], start: int = 0) -> None:
    for index, (name, count) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(start, start + count):
            (root / name / f"{number}.png").write_bytes(tiny_png(index * 100_000 + number))


def splits_by_path(dataset: Dataset) -> dict[Path, str]:
    return {record.path: record.split for record in dataset.records}


def test_every_odd_file_is_reported_with_its_reason_and_good_files_load(tmp_path: Path) -> None:
    odd = odd_dataset(tmp_path / "odd")
    dataset = scan(odd.root)

    reasons = {item.path: item.reason for item in dataset.skipped}
    for path, word in odd.skipped.items():
        assert path in reasons, f"{path.name} was not reported"
        assert word in reasons[path], f"{path.name}: {reasons[path]!r} should mention {word!r}"
    assert set(reasons) == set(odd.skipped), "only the odd files are skipped"

    pair = {odd.root / "cat" / "plain.jpg", odd.root / "cat" / "plain copy.jpg"}
    not_recorded = set(odd.good) - {record.path for record in dataset.records}
    assert len(dataset.records) == len(odd.good) - 1 and len(not_recorded) == 1 and not_recorded < pair
    assert dataset.classes == ["cat", "dog", "tiny"]
    in_class = [group for group in dataset.duplicates if not group.crosses_classes]
    assert [set(group.paths) for group in in_class] == [pair]
    assert [group.classes for group in dataset.duplicates if group.crosses_classes] == [("cat", "dog")]

    assert any("'empty' is empty" in w and "add images" in w for w in dataset.warnings)
    assert any("'tiny' has only 2 images" in w and "add at least 1 more" in w for w in dataset.warnings)
    assert {r.split for r in dataset.records if dataset.classes[r.label] == "tiny"} == {"train"}


def test_a_rescan_reads_only_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 5, "b": 5})
    first = scan(root)
    reads: list[Path] = []
    real_read = dataset_module._read_entry
    monkeypatch.setattr(dataset_module, "_read_entry", lambda path, *rest: reads.append(path) or real_read(path, *rest))

    assert scan(root).records == first.records
    assert reads == []

    changed = root / "a" / "0.png"
    changed.write_bytes(tiny_png(777))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    rescanned = scan(root)
    assert reads == [changed]
    assert next(r.sha1 for r in rescanned.records if r.path == changed) != first.records[0].sha1


def test_a_corrupt_scan_index_is_ignored_and_rewritten(tmp_path: Path, isolated_scan_index: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 4, "b": 4})
    first = scan(root)
    (index_file,) = (isolated_scan_index / "automl" / "scans").iterdir()
    index_file.write_text('{"version": "2", "files": {"a/0.png": [1, 2')
    assert scan(root).records == first.records
    assert json.loads(index_file.read_text())["files"].keys() == {f"{c}/{n}.png" for c in "ab" for n in range(4)}


def test_header_only_scan_misses_truncation_and_a_verifying_scan_catches_it(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 3, "b": 3})
    (root / "a" / "cut.jpg").write_bytes(truncated_jpeg())
    assert root / "a" / "cut.jpg" in {r.path for r in scan(root, verify=False).records}
    verified = scan(root)  # same index: the header-only entry is not trusted for a verifying scan
    assert [(s.path.name, "truncated" in s.reason) for s in verified.skipped] == [("cut.jpg", True)]


def test_adding_images_never_moves_old_ones(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 40, "b": 40})
    before = splits_by_path(scan(root))
    make_classes(root, {"a": 40, "b": 40}, start=40)
    after = splits_by_path(scan(root))
    assert len(after) == 160
    assert {path: after[path] for path in before} == before


def test_the_seed_changes_the_split_and_the_same_seed_repeats_it(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 40, "b": 40})
    seed0, seed1 = splits_by_path(scan(root, seed=0)), splits_by_path(scan(root, seed=1))
    assert splits_by_path(scan(root, seed=0, use_index=False)) == seed0
    moved = sum(seed0[path] != seed1[path] for path in seed0)
    assert moved > 10  # about half of the images change split between two independent seeds


def test_near_duplicate_groups_share_the_split_of_their_smallest_sha1(tmp_path: Path) -> None:
    """Groups of 2-4 images (some across classes) land whole in one split; images outside keep their hash split."""
    root = tmp_path / "ds"
    make_classes(root, {"a": 60, "b": 60})
    plain = scan(root, seed=3)
    sha1s = sorted(record.sha1 for record in plain.records)
    rng = np.random.default_rng(0)
    members = rng.permutation(sha1s)[:60]
    chunks = np.array_split(members, 20)
    groups = {sha1: min(chunk) for chunk in chunks for sha1 in chunk}
    grouped = scan(root, seed=3, groups=groups)
    split = {record.sha1: record.split for record in grouped.records}
    hash_split = {record.sha1: record.split for record in plain.records}
    for chunk in chunks:
        assert {split[sha1] for sha1 in chunk} == {hash_split[min(chunk)]}
    assert all(split[sha1] == hash_split[sha1] for sha1 in sha1s if sha1 not in groups)
    assert sum(split[sha1] != hash_split[sha1] for sha1 in groups) > 5  # grouping did move images
    assert grouped.group_key(members[0]) == groups[members[0]] and grouped.group_key("f" * 40) == "f" * 40
    assert splits_by_path(scan(root, seed=3, groups={})) == splits_by_path(plain)


def test_split_is_stratified_per_class(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"big": 400, "small": 300})
    dataset = scan(root)
    for name, counts in dataset.split_counts().items():
        total = sum(counts.values())
        for split, fraction in FRACTIONS.items():
            assert abs(counts[split] / total - fraction) < 0.07, (name, counts)


@pytest.mark.parametrize("size", [3, 4, 5])
def test_a_class_of_three_or_more_always_gets_val_and_test(tmp_path: Path, size: int) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"few": size, "other": 3})
    for seed in range(40):
        for counts in scan(root, seed=seed).split_counts().values():
            assert counts["val"] >= 1 and counts["test"] >= 1 and counts["train"] >= 1, (seed, counts)


def test_max_per_class_caps_each_class_deterministically(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, {"a": 30, "b": 8})
    capped = scan(root, max_per_class=10)
    assert Counter(r.label for r in capped.records) == {0: 10, 1: 8}
    assert scan(root, max_per_class=10).records == capped.records


def test_missing_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        scan(tmp_path / "nowhere")


def test_zero_classes_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(jpeg(1))
    with pytest.raises(DatasetError, match="no class folders") as error:
        scan(tmp_path)
    assert "one sub-folder per class" in str(error.value)


def test_one_class_is_a_dataset_error(tmp_path: Path) -> None:
    make_classes(tmp_path, {"only": 5})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"1 usable class \(only\); a classifier needs at least 2"):
        scan(tmp_path)
    reported = scan(tmp_path, allow_unusable=True)
    assert reported.classes == ["only"] and "needs at least 2" in str(reported.problem)


def test_a_class_of_one_image_goes_to_train_with_a_warning(tmp_path: Path) -> None:
    make_classes(tmp_path, {"lonely": 1, "many": 10})
    dataset = scan(tmp_path)
    assert dataset.split_counts()["lonely"] == {"train": 1, "val": 0, "test": 0}
    assert any("'lonely' has only 1 image" in w and "add at least 2 more" in w for w in dataset.warnings)


def test_unreadable_files_and_broken_links_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 does not stop root (these tests may run as root), so the refusal is raised in the read."""
    make_classes(tmp_path, {"a": 3, "b": 3})
    locked = tmp_path / "a" / "locked.jpg"
    locked.write_bytes(jpeg(5))
    (tmp_path / "b" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    import automl.data.dataset

    real_read = automl.data.dataset.read_bounded

    def read_bounded(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(automl.data.dataset, "read_bounded", read_bounded)
    assert [(s.path.name, s.reason) for s in scan(tmp_path).skipped] == [
        ("locked.jpg", "cannot read: Permission denied"),
        ("gone.jpg", "broken or unreadable link (No such file or directory): fix its permissions or remove it"),
    ]


def test_from_recipe_resolves_the_folder_under_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_classes(tmp_path / "pets", {"a": 4, "b": 4})
    monkeypatch.setenv("AUTOML_DATA", str(tmp_path))
    recipe = parse_recipe("data: {folder: pets, seed: 3, max_per_class: 3}")
    dataset = Dataset.from_recipe(recipe.data)
    assert dataset.root == tmp_path / "pets"
    assert dataset.records == scan(tmp_path / "pets", seed=3, max_per_class=3).records
