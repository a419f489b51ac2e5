"""The Tune experiment over time and under faults, on real cached features and a real local Ray.

The trials train on the cached EfficientNet-Lite0 features of animals10 (the `built_run` fixture's cache).

Faults: a trial whose features hold a NaN (what a damaged cache row would give) raises; the worker process
of a running trial is SIGKILLed (its pid is the `pid` Tune writes into each report). Both must be
recorded, retried once, and leave the rest of the search to finish.

Memory: a sampler thread reads, twice a second, how many trials have finished (their `result.json`) and
the resident memory (VmRSS in /proc) of this process (the driver) and of every worker that reported a
trial. Memory after the first 10 trials is the reference: by the end no process may hold 20 % more.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from tune_helpers import run_tune, tune_recipe

from automl.backbones.registry import get_backbone
from automl.runs import RunFolder
from automl.search.features import FeaturePlan, FeatureSet, prepare_features
from automl.search.tune_state import collect_trials

BACKBONE = "efficientnet_lite0"
WARM_UP_TRIALS = 10
MAX_GROWTH = 0.20
SAMPLE_PERIOD_S = 0.5


@dataclass
class Sample:
    finished: int
    driver: int
    workers: dict[int, int]


@dataclass
class MemoryTrace:
    """Resident memory (bytes) of the driver and each worker, sampled as trials finish."""

    samples: list[Sample] = field(default_factory=list)

    def reference(self) -> Sample:
        return next(sample for sample in self.samples if sample.finished >= WARM_UP_TRIALS)

    def last_seen(self, pid: int) -> Sample:
        """The last sample in which worker `pid` was alive (Tune stops the actors as the search ends)."""
        return next(sample for sample in reversed(self.samples) if pid in sample.workers)

    def growth(self) -> dict[str, tuple[float, int]]:
        """Relative growth from the reference to the last sample of the driver and of each worker alive at the
        reference, with the trials finished at that last sample."""
        first, last = self.reference(), self.samples[-1]
        growth = {"driver": (last.driver / first.driver - 1, last.finished)}
        for pid, rss in first.workers.items():
            seen = self.last_seen(pid)
            growth[f"worker {pid}"] = (seen.workers[pid] / rss - 1, seen.finished)
        return growth

    def describe(self) -> str:
        first, last, mib = self.reference(), self.samples[-1], 2**20
        workers = ", ".join(
            f"{pid} {rss / mib:.0f} -> {self.last_seen(pid).workers[pid] / mib:.0f} MiB "
            f"(at {self.last_seen(pid).finished} trials)"
            for pid, rss in first.workers.items()
        )
        return (
            f"from {first.finished} to {last.finished} trials: driver {first.driver / mib:.0f} -> "
            f"{last.driver / mib:.0f} MiB; workers {workers}"
        )


def _rss(pid: int) -> int | None:
    """Resident set size in bytes, or None when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def _reports(results: Path) -> list[dict]:
    """A trial's reports so far; a last line still being copied into the run folder is left for the next look."""
    reports = []
    try:
        lines = results.read_text().splitlines()
    except OSError:  # replaced while Tune copies it
        return reports
    for line in lines:
        try:
            reports.append(json.loads(line))
        except ValueError:
            break
    return reports


def _trial_reports(experiment: Path) -> tuple[int, set[int]]:
    """Finished trials (a `final` report) and the pids of the workers that ran any trial."""
    finished, pids = 0, set()
    for results in experiment.glob("*/result.json"):
        reports = _reports(results)
        pids.update(report["pid"] for report in reports)
        finished += any(report.get("final") for report in reports)
    return finished, pids


def _sample_until(stop: threading.Event, experiment: Path, trace: MemoryTrace) -> None:
    while not stop.wait(SAMPLE_PERIOD_S):
        finished, pids = _trial_reports(experiment)
        workers = {pid: rss for pid in pids if (rss := _rss(pid)) is not None}
        trace.samples.append(Sample(finished, _rss(os.getpid()) or 0, workers))


def _cached_features(built_run) -> FeatureSet:
    features, report = prepare_features(
        built_run.dataset,
        {BACKBONE: get_backbone(BACKBONE)},
        FeaturePlan.pooled(BACKBONE, ("train", "val")),
        "default",
        str(built_run.cache),
        progress=False,
    )
    assert report.computed == 0, "the features come from the warm cache"
    return features


def _long_search(tmp_path: Path, built_run, trials: int) -> MemoryTrace:
    """`trials` trials of every head and optimizer on the cached features; their memory trace."""
    recipe = tune_recipe(
        tmp_path,
        f"{{backbones: {BACKBONE}, cuts: all, epochs: 3, scheduler: fifo, sampler: random, seed: 1}}",
        f"{{trials: {trials}, time: 1h}}",
    )
    features = _cached_features(built_run)
    experiment = tmp_path / "run" / "tune" / "search"
    trace, stop = MemoryTrace(), threading.Event()
    sampler = threading.Thread(target=_sample_until, args=(stop, experiment, trace), daemon=True)
    sampler.start()
    try:
        run_tune(tmp_path, recipe, features)
    finally:
        stop.set()
        sampler.join(timeout=10)
    finished, _pids = _trial_reports(experiment)
    assert finished == trials
    return trace


def _assert_flat(trace: MemoryTrace, trials: int) -> None:
    print(trace.describe())  # the numbers RELIABILITY.md quotes (pytest -s)
    growth = trace.growth()
    lasted = [finished for name, (_, finished) in growth.items() if name.startswith("worker")]
    # the last samples lag the last trials by Tune's copy of result.json (about a second, several short trials):
    # a worker measured past 60 % of the trials, well after the warm-up, shows whether memory keeps growing
    assert lasted and max(lasted) >= 0.6 * trials, f"no worker was measured through the search ({lasted} trials)"
    grown = {name: f"{value:+.1%}" for name, (value, _) in growth.items() if value > MAX_GROWTH}
    assert not grown, f"memory grew more than {MAX_GROWTH:.0%} after {WARM_UP_TRIALS} trials: {grown}"


@pytest.mark.slow
def test_thirty_trials_do_not_grow_the_driver_or_the_workers(tmp_path: Path, built_run, local_ray) -> None:
    _assert_flat(_long_search(tmp_path, built_run, trials=30), 30)


@pytest.mark.soak
def test_a_hundred_trials_do_not_grow_the_driver_or_the_workers(tmp_path: Path, built_run, local_ray) -> None:
    _assert_flat(_long_search(tmp_path, built_run, trials=100), 100)


DAMAGED = "damaged_lite0"
"""A second 'backbone' whose cached validation rows hold one NaN: every trial on it raises."""
VICTIM_EPOCHS = 300
"""Long enough (several seconds: Tune copies result.json to the run folder about once a second) for the killer
to find the trial running."""


def _kill_first_running_trial(experiment: Path, killed: dict[str, int], stop: threading.Event) -> None:
    """SIGKILL the worker of the first efficientnet_lite0 trial that has reported its second epoch."""
    while not killed and not stop.wait(0.1):
        for results in experiment.glob(f"{BACKBONE}-*/result.json"):
            reports = _reports(results)
            if reports and not reports[-1].get("final") and reports[-1].get("epoch", 0) >= 2:
                killed[reports[-1]["trial_id"]] = reports[-1]["pid"]
                os.kill(reports[-1]["pid"], signal.SIGKILL)
                return


@pytest.mark.slow
def test_a_raising_trial_and_a_killed_worker_leave_the_search_to_finish(tmp_path: Path, built_run, local_ray) -> None:
    features = _cached_features(built_run)
    good = features.arrays[FeatureSet.key(BACKBONE, "all")]
    damaged_val = good["x_val"].copy()
    damaged_val[3, 5] = np.nan
    features.arrays[FeatureSet.key(DAMAGED, "all")] = {**good, "x_val": damaged_val}
    recipe = tune_recipe(
        tmp_path,
        f"{{backbones: [{BACKBONE}, {DAMAGED}], cuts: all, heads: softmax, optimizers: adam, "
        f"epochs: {VICTIM_EPOCHS}, scheduler: fifo, sampler: random, seed: 3}}",
        "{trials: 4, time: 1h}",
    )
    killed: dict[str, int] = {}
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_first_running_trial, args=(tmp_path / "run" / "tune" / "search", killed, stop), daemon=True
    )
    killer.start()
    try:
        run_dir = run_tune(tmp_path, recipe, features)
    finally:
        stop.set()
        killer.join(timeout=10)
    trials = collect_trials(RunFolder(run_dir)).to_frame()
    print(
        trials[["trial_id", "param_backbone", "status", "failures", "epochs", "seconds", "error"]].to_string()
    )  # RELIABILITY.md

    assert len(trials) == 4 and set(trials["param_backbone"]) == {BACKBONE, DAMAGED}
    failed = trials[trials["param_backbone"] == DAMAGED]
    assert (failed["status"] == "failed").all() and (failed["failures"] == 2).all(), "retried once, then failed"
    assert failed["error"].str.contains("TrialData.x_val: holds NaN").all(), failed["error"].tolist()
    assert killed, "no worker was killed: the fault was not exercised"
    (victim,) = killed
    finished = trials[trials["param_backbone"] == BACKBONE]
    assert (finished["status"] == "complete").all() and finished["val_accuracy"].min() > 0.8
    row = finished[finished["trial_id"] == victim].iloc[0]
    assert row["failures"] == 1, "the killed trial was retried once"
    assert len(row["epoch_val_accuracy"]) == VICTIM_EPOCHS, "the retry ran all its epochs"
