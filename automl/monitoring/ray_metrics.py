"""The search's progress as Ray custom metrics, for the dashboard's Metrics view and any Prometheus scraping.

Recorded in the driver with `ray.util.metrics` and exported by the node's metrics agent (Prometheus text on
the node's `metricsExportPort`, names prefixed `ray_`), tagged by run folder name so that several searches
on one cluster stay apart:

- `automl_search_trials{run, state}`: trials by state: running, pending, complete, pruned, failed;
- `automl_search_best_score{run, metric}`: the best finished trial's score so far (the search's metric);
- `automl_extraction_images_per_second{backbone}` and the counter `automl_extraction_images{backbone}`:
  bottleneck extraction speed and the photos run through each backbone (cache misses).

The trial counts are recomputed from Tune's whole list of trials at each event, so a resumed search reports
its restored trials too.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from automl.runs.trials import TrialStatus, ended_status

if TYPE_CHECKING:
    from ray.tune.experiment import Trial
    from ray.util.metrics import Counter, Gauge

STATES = tuple(TrialStatus)


@cache
def _trials_gauge() -> Gauge:
    from ray.util.metrics import Gauge

    return Gauge("automl_search_trials", description="Trials of the search by state.", tag_keys=("run", "state"))


@cache
def _best_gauge() -> Gauge:
    from ray.util.metrics import Gauge

    return Gauge(
        "automl_search_best_score",
        description="The best finished trial's score so far.",
        tag_keys=("run", "metric"),
    )


@cache
def _extraction_rate() -> Gauge:
    from ray.util.metrics import Gauge

    return Gauge(
        "automl_extraction_images_per_second",
        description="Bottleneck extraction speed of the last extraction, photos per second.",
        tag_keys=("backbone",),
    )


@cache
def _extraction_images() -> Counter:
    from ray.util.metrics import Counter

    return Counter(
        "automl_extraction_images",
        description="Photos run through the backbone's frozen part (cache misses).",
        tag_keys=("backbone",),
    )


def record_extraction(backbone: str, images: int, seconds: float) -> None:
    """One backbone's extraction; nothing when Ray is not connected or nothing was computed."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or images <= 0 or seconds <= 0:
        return
    tags = {"backbone": backbone}
    _extraction_rate().set(images / seconds, tags=tags)
    _extraction_images().inc(images, tags=tags)


def trial_state(trial: Trial) -> TrialStatus:
    """One of `STATES`, as trials.parquet says it (complete: the final report came in; pruned: stopped before)."""
    if trial.status == "TERMINATED":
        return ended_state(trial)
    return {"RUNNING": TrialStatus.RUNNING, "ERROR": TrialStatus.FAILED}.get(trial.status, TrialStatus.PENDING)


def ended_state(trial: Trial) -> TrialStatus:
    return ended_status(trial.last_result)


class SearchMetrics(Callback):
    """Tune callback publishing the trial counts and the best score as Ray metrics.

    Pickled with Tune's run configuration (and restored on resume), so it holds only its settings.
    """

    def __init__(self, run: str, metric: str) -> None:
        self.run = run
        self.metric = metric

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._publish(trials)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._publish(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._publish(trials, {trial.trial_id: ended_state(trial)})  # called before Tune marks the trial ended

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._publish(trials, {trial.trial_id: TrialStatus.FAILED})

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._publish(trials)

    def _publish(self, trials: list[Trial], ended: dict[str, TrialStatus] | None = None) -> None:
        """Counts by state and the best score; `ended`: the state of trials ending now, by trial id."""
        counts = dict.fromkeys(STATES, 0)
        scores = []
        for trial in trials:
            state = (ended or {}).get(trial.trial_id) or trial_state(trial)
            counts[state] += 1
            if state == TrialStatus.COMPLETE and trial.last_result.get(self.metric) is not None:
                scores.append(trial.last_result[self.metric])
        gauge = _trials_gauge()
        for state, count in counts.items():
            gauge.set(count, tags={"run": self.run, "state": state})
        if scores:
            _best_gauge().set(max(scores), tags={"run": self.run, "metric": self.metric})
