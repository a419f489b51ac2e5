"""`automl cache build` as users run it: real subprocesses racing to fill the same cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.store import PartStore
from automl.data.dataset import Dataset
from automl.recipe import load_recipe


def _recipe(tmp_path: Path, animals10: Path, cache: Path, *, max_per_class: int = 2, cut: str = "all") -> Path:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"data: {{folder: {json.dumps(str(animals10))}, max_per_class: {max_per_class}}}\n"
        f"search: {{backbones: mobilenet_v2, weights: none, cuts: [{cut}]}}\n"
        f"cache: {json.dumps(str(cache))}\n"
    )
    return recipe


def _automl(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "automl", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_concurrent_builds_both_succeed_and_leave_one_valid_cache(tmp_path: Path, animals10: Path) -> None:
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, animals10, cache, max_per_class=8)  # 80 photos: some fall in the test split
    builds = [_automl("cache", "build", str(recipe), "--json") for _ in range(2)]
    outputs = [build.communicate(timeout=300) for build in builds]
    for build, (_out, err) in zip(builds, outputs, strict=True):
        assert build.returncode == 0, err[-2000:]
    reports = [json.loads(out)["backbones"][0] for out, _err in outputs]

    dataset = Dataset.from_recipe(load_recipe(recipe).data)
    searched = {record.sha1 for split in ("train", "val") for record in dataset.split(split)}
    images = reports[0]["computed"] + reports[0]["reused"]
    assert images == reports[0]["images"] == len(searched) < len(dataset.records), "no test photo: no trial reads it"
    assert reports[0]["cuts"] == ["all"] and reports[0]["splits"] == ["train", "val"]
    assert reports[0]["stage"] is None, "no `top` or `half` in search.cuts: nothing to fine-tune"
    assert sorted(r["computed"] for r in reports) == [0, images]  # the lock made the second one reuse
    parts = PartStore(cache).parts()
    sha1s = [sha1 for part in parts for sha1 in PartStore(cache).sha1s(part)]
    assert len(sha1s) == len(set(sha1s)) == images and set(sha1s) == searched  # no duplicate rows
    verify = subprocess.run(
        [sys.executable, "-m", "automl", "cache", "verify", "--cache", str(cache), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] == len(parts)


@pytest.mark.slow
def test_a_killed_build_leaves_a_valid_cache_that_the_next_build_completes(
    tmp_path: Path, natural_images: Path
) -> None:
    # The `none` cut (224x224x3 uint8 pixels, 150 kB a row) fills the writer's 64 MiB part bound every 448
    # images, so 1,600 photos commit three parts while the build runs and the last one at its end.
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, natural_images, cache, max_per_class=200, cut="none")
    victim = _automl("cache", "build", str(recipe), "--json")
    deadline = time.monotonic() + 120
    while not PartStore(cache).parts() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, f"the build ended (rc {victim.returncode}) before it could be killed mid-way"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    assert PartStore(cache).check_all(delete=False) == []
    records = Dataset.from_recipe(load_recipe(recipe).data).records
    total = len({record.sha1 for record in records})
    stats = BottleneckCache(cache).ensure(get_backbone("mobilenet_v2"), "none", ["none"], records, progress=False)
    assert 0 < stats.reused < total  # what the victim committed survives; the rest is computed now
    assert stats.computed + stats.reused == total and stats.repaired == []
    store = PartStore(cache)
    assert store.check_all(delete=False) == []
    sha1s = [sha1 for part in store.parts() if part.manifest.cut == "none" for sha1 in store.sha1s(part)]
    assert len(sha1s) == len(set(sha1s)) == total  # no row computed twice
