"""The trial's callbacks: the Keras-style protocol inside `train_trial`, and each callback on its own."""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import pytest
from trial_data import separable

from automl.train import ReportMetrics, TargetAccuracy, TimeLimit, TrialCallback, TrialData, train_trial
from automl.train.callbacks import CallbackList, EpochLogs, KeepBestEpoch, StopOnDivergence, TrialState


@pytest.fixture(scope="module")
def blobs() -> TrialData:
    return separable()


class Recorder(TrialCallback):
    """Writes down every hook call into a shared journal, and stops the trial at `stop_at` if given."""

    def __init__(self, name: str, journal: list[str], stop_at: int | None = None) -> None:
        self.name, self.journal, self.stop_at = name, journal, stop_at

    def on_train_begin(self) -> None:
        self.journal.append(f"{self.name}:begin:{self.trial.epochs}")

    def on_epoch_end(self, epoch: int, logs: EpochLogs) -> None:
        assert logs["epoch"] == epoch
        self.journal.append(f"{self.name}:{epoch}")
        if epoch == self.stop_at:
            self.trial.stop_training = True


def test_hooks_run_in_order_and_a_stop_ends_training_after_every_callback_saw_that_epoch(blobs: TrialData) -> None:
    journal: list[str] = []
    result = train_trial({"epochs": 6}, blobs, [Recorder("a", journal, stop_at=2), Recorder("b", journal)])
    assert journal == ["a:begin:6", "b:begin:6", "a:1", "b:1", "a:2", "b:2"]
    assert result.stopped and len(result.history) == 2 and result.weights


def test_a_stop_at_the_last_epoch_is_not_an_early_stop(blobs: TrialData) -> None:
    result = train_trial({"epochs": 2}, blobs, [Recorder("a", [], stop_at=2)])
    assert not result.stopped and len(result.history) == 2


def test_target_accuracy_ends_the_trial_at_the_first_epoch_that_reaches_it(blobs: TrialData) -> None:
    free = train_trial({"epochs": 10}, blobs)
    target = free.best_val_accuracy
    first = next(int(epoch["epoch"]) for epoch in free.history if epoch["val_accuracy"] >= target)
    assert first < 10, "the target must come before the last epoch for this test to mean anything"
    stopped = train_trial({"epochs": 10}, blobs, [TargetAccuracy(target)])
    assert stopped.stopped
    assert [e["val_accuracy"] for e in stopped.history] == [e["val_accuracy"] for e in free.history[:first]]


def test_a_time_limit_counts_from_when_it_was_made(blobs: TrialData) -> None:
    """The search hands a trial the time left before its deadline: set-up time counts, epochs are never cut."""
    spent = TimeLimit(0.2)
    time.sleep(0.2)
    assert len(train_trial({"epochs": 3}, blobs, [spent]).history) == 1
    assert len(train_trial({"epochs": 3}, blobs, [TimeLimit(3600.0)]).history) == 3


def test_report_metrics_hands_over_a_copy(blobs: TrialData) -> None:
    def vandal(metrics: EpochLogs) -> None:
        metrics["val_accuracy"] = -5.0

    result = train_trial({"epochs": 2}, blobs, [ReportMetrics(vandal)])
    assert all(epoch["val_accuracy"] >= 0 for epoch in result.history)


def _state() -> TrialState:
    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    return TrialState(network, epochs=4)


def _logs(epoch: int, val_accuracy: float, val_loss: float, train_loss: float = 1.0) -> EpochLogs:
    return {"epoch": epoch, "val_accuracy": val_accuracy, "val_loss": val_loss, "train_loss": train_loss}


def test_keep_best_epoch_keeps_the_most_accurate_then_lowest_loss_epoch_and_its_weights() -> None:
    trial = _state()
    best = KeepBestEpoch()
    hooks = CallbackList([best], trial)
    hooks.on_train_begin()
    assert best.logs["epoch"] == 0 and len(best.weights) == 2  # before any epoch: the untrained network
    history = [(0.5, 1.0), (0.8, 0.6), (0.8, 0.4), (0.7, 0.3)]
    for epoch, (accuracy, loss) in enumerate(history, 1):
        trial.network.set_weights([np.full(w.shape, epoch, "float32") for w in trial.network.get_weights()])
        hooks.on_epoch_end(epoch, _logs(epoch, accuracy, loss))
    assert best.logs["epoch"] == 3
    assert all((w == 3).all() for w in best.weights)


def test_stop_on_divergence_stops_only_at_a_non_finite_training_loss() -> None:
    trial = _state()
    hooks = CallbackList([StopOnDivergence()], trial)
    hooks.on_epoch_end(1, _logs(1, 0.5, 1.0, train_loss=1e30))
    assert not trial.stop_training
    hooks.on_epoch_end(2, _logs(2, 0.5, 1.0, train_loss=math.nan))
    assert trial.stop_training
