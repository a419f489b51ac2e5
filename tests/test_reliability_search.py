"""Faults around a whole `automl search`, as users meet them: real CLI processes, real Ray, real file systems.

Another Ray already running on the machine, a trial time of zero, a run folder on a read-only file system,
two searches filling one cold cache at the same time while one of them runs out of disk at the export. The
faults inside the Tune experiment (a trial that raises, a SIGKILLed worker) are in test_reliability_trials.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from automl.cache.store import PartStore
from automl.data.dataset import Dataset
from automl.recipe import load_recipe
from automl.runs import RunFolder, TrialStatus, TrialTable

IMAGES_PER_CLASS = 10


def _recipe(path: Path, animals10: Path, *, output: Path, cache: Path, budget: str) -> Path:
    """The smallest real search: EfficientNet-Lite0 frozen, softmax heads, 10 photos per animals10 class."""
    path.write_text(
        f"name: {path.stem}\n"
        f"data: {{folder: {json.dumps(str(animals10))}, max_per_class: {IMAGES_PER_CLASS}}}\n"
        "search: {backbones: efficientnet_lite0, cuts: all, heads: softmax, optimizers: adam, epochs: 2,"
        " sampler: random, scheduler: fifo}\n"
        f"budget: {budget}\n"
        f"output: {{folder: {json.dumps(str(output))}}}\n"
        f"cache: {json.dumps(str(cache))}\n",
        encoding="utf-8",
    )
    return path


def _search(recipe: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "automl", "search", str(recipe), *args]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """An empty folder to mount a file system on (these tests need root, as in CI); unmounted afterwards."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def _mount_tmpfs(folder: Path, size: str, *, read_only: bool = False) -> None:
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")


def test_a_trial_time_of_zero_is_refused_before_anything_starts(tmp_path: Path, animals10: Path) -> None:
    """(A total time too short for one trial: test_cli_search::test_a_budget_that_cannot_fit_one_trial_...)"""
    output = tmp_path / "runs"
    budget = "{time: 10m, trial_time: 0s}"
    recipe = _recipe(tmp_path / "zero.yaml", animals10, output=output, cache=tmp_path / "cache", budget=budget)
    search = _search(recipe)
    _out, err = search.communicate(timeout=120)
    assert search.returncode == 2, err[-2000:]
    assert "budget.trial_time: must be positive" in err and "hint:" in err and "Traceback" not in err, err[-2000:]
    assert not output.exists(), "no run folder is started for a search that cannot run"


def test_a_read_only_output_folder_is_one_clear_error(tmp_path: Path, animals10: Path, mount_point: Path) -> None:
    _mount_tmpfs(mount_point, "1m", read_only=True)
    recipe = _recipe(
        tmp_path / "ro.yaml", animals10, output=mount_point / "runs", cache=tmp_path / "cache", budget="{time: 5m}"
    )
    search = _search(recipe)
    _out, err = search.communicate(timeout=120)
    assert search.returncode == 1, err[-2000:]
    assert f"error: {mount_point / 'runs'}: Read-only file system" in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert list(mount_point.iterdir()) == []


@pytest.mark.soak  # about 4 minutes on 2 shared cores: `make test-soak`
def test_two_searches_share_one_cold_cache_and_a_full_disk_leaves_no_model(
    tmp_path: Path, animals10: Path, mount_point: Path
) -> None:
    """Two searches build the same cold cache at once; the second's run folder is on a 6 MB disk.

    6 MB holds the run folder's recipe, Tune logs and trial checkpoints (softmax heads, under 1 MB) but
    not the 14 MB `model.keras`, so the disk fills during the export, after the trials.
    """
    _mount_tmpfs(mount_point, "6m")
    cache = tmp_path / "cache"
    budget = "{time: 6m, trials: 2}"
    roomy = _recipe(tmp_path / "roomy.yaml", animals10, output=tmp_path / "runs", cache=cache, budget=budget)
    full = _recipe(tmp_path / "full.yaml", animals10, output=mount_point, cache=cache, budget=budget)
    searches = [_search(roomy, "--json"), _search(full, "--json")]
    (out, err), (_full_out, full_err) = [search.communicate(timeout=400) for search in searches]

    assert searches[0].returncode == 0, err[-3000:]
    summary = json.loads(out.splitlines()[-1])
    assert summary["trials"]["complete"] == 2 and Path(summary["model"], "model.keras").is_file()

    error = [line for line in full_err.splitlines() if line.startswith("error:")]
    print(
        f"full disk: rc={searches[1].returncode}, {error}; first search: cache {summary['cache']}"
    )  # for RELIABILITY.md
    assert searches[1].returncode == 1, full_err[-3000:]
    assert "No space left on device" in full_err and "Traceback" not in full_err, full_err[-3000:]
    (run_dir,) = mount_point.iterdir()
    trials = TrialTable.read(RunFolder(run_dir).trials)
    assert len(trials.get([TrialStatus.COMPLETE])) == 3, "both trials and the baseline finished before the export"
    left = sorted(path.name for path in run_dir.iterdir())
    assert "model" not in left and not any(name.startswith(".model") for name in left), left
    assert "summary.json" not in left and "metrics.json" not in left, "nothing presents the run as done"

    dataset = Dataset.from_recipe(load_recipe(roomy).data)
    images = len(dataset.split("train")) + len(dataset.split("val"))  # a search extracts no test photo
    store = PartStore(cache)
    sha1s = [sha1 for part in store.parts() for sha1 in store.sha1s(part)]
    assert len(sha1s) == len(set(sha1s)) == images, "each image computed once, by one of the two searches"
    assert summary["cache"]["cache_misses"] in (0, images)
    verify = subprocess.run(
        [sys.executable, "-m", "automl", "cache", "verify", "--cache", str(cache), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] == len(store.parts()), verify.stdout


SEARCH_PROCESS = """
import sys
import ray
from automl.search.cluster import connect
connect(None)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.readline()  # the test stops the other Ray meanwhile
print(ray.get(ray.remote(lambda: "alive").remote()), flush=True)
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_search_keeps_its_own_ray_when_another_runs_on_the_machine() -> None:
    """Found by these tests: with no address, `ray.init()` joined the newest Ray on the machine (another search's,
    another user's), and the search died with it ("Owner's node has crashed") when that Ray stopped."""
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    other = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    search = None
    try:
        assert other.stdout is not None
        printed = []
        while not printed or "Ray runtime started" not in printed[-1]:  # --block: the output never ends
            printed.append(other.stdout.readline())
            assert printed[-1], "`ray start` ended: " + "".join(printed)
        search = subprocess.Popen(
            [sys.executable, "-c", SEARCH_PROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert search.stdout is not None and search.stdin is not None
        own_address = search.stdout.readline().strip()
        assert own_address and not own_address.endswith(f":{port}"), f"the search joined the other Ray ({own_address})"
        other.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes, no one else's
        other.wait(timeout=60)
        out, _ = search.communicate("go\n", timeout=120)
        assert search.returncode == 0 and out.strip() == "alive"
    finally:
        for process in (search, other):
            if process is not None and process.poll() is None:
                process.kill()
