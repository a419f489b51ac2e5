"""One trial's training on synthetic and cached-activation data: heads, reporting, stopping, memory, threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from trial_data import separable

from automl.errors import InputError
from automl.train import ReportMetrics, TimeLimit, TrialData, TrialResult, baseline_config, train_trial

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blobs() -> TrialData:
    return separable()


@pytest.mark.parametrize(
    "overrides",
    [
        {"head": "softmax"},
        {"head": "mlp", "mlp_hidden": 64, "dropout": 0.5},
        {"head": "svm", "svm_c": 1.0},
        {"head": "softmax", "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        {"head": "svm", "optimizer": "adam", "epsilon": 0.1, "learning_rate": 0.01},
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
def test_each_head_and_optimizer_learns_a_separable_problem(blobs: TrialData, overrides: dict) -> None:
    result = train_trial({**baseline_config(), "epochs": 8, **overrides}, blobs)
    assert result.best_val_accuracy >= 0.95, result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[result.best_epoch - 1]["val_accuracy"] == result.best_val_accuracy


def test_the_best_epoch_is_the_most_accurate_then_the_lowest_loss(blobs: TrialData) -> None:
    """Blobs reach full validation accuracy within a few epochs and the loss keeps falling: the kept
    weights must be those of the lowest-loss epoch among the most accurate, not the first of them."""
    result = train_trial({**baseline_config(), "epochs": 12, "learning_rate": 0.003}, blobs)
    ranked = sorted(result.history, key=lambda epoch: (-epoch["val_accuracy"], epoch["val_loss"]))
    tied = [epoch for epoch in result.history if epoch["val_accuracy"] == result.best_val_accuracy]
    assert len(tied) > 1, "the problem must plateau for this test to mean anything"
    assert result.best_epoch == ranked[0]["epoch"] != tied[0]["epoch"]


def test_parameter_count_is_that_of_the_head(blobs: TrialData) -> None:
    features, classes = blobs.x_train.shape[1], blobs.num_classes
    linear = train_trial({"epochs": 1, "head": "svm"}, blobs)
    mlp = train_trial({"epochs": 1, "head": "mlp", "mlp_hidden": 32}, blobs)
    assert linear.parameter_count == features * classes + classes
    assert mlp.parameter_count == features * 32 + 32 + 32 * classes + classes


def test_report_is_called_after_every_epoch_with_increasing_epochs(blobs: TrialData) -> None:
    calls: list[dict] = []
    result = train_trial({"epochs": 5}, blobs, [ReportMetrics(calls.append)])
    assert [c["epoch"] for c in calls] == [1, 2, 3, 4, 5]
    for call in calls:
        assert set(call) >= {"epoch", "val_accuracy", "val_top5", "train_loss", "val_loss", "epoch_seconds"}
        assert 0 <= call["val_accuracy"] <= call["val_top5"] <= 1
        assert call["epoch_seconds"] > 0
    assert result.history == calls
    assert result.best_val_accuracy == max(c["val_accuracy"] for c in calls)


@pytest.mark.parametrize("error", [RuntimeError("tune session ended"), SystemExit(0)], ids=["error", "sys.exit"])
def test_an_exception_from_report_propagates_and_the_next_trial_runs(blobs: TrialData, error: BaseException) -> None:
    """Ray Tune ends a stopped trial with sys.exit(0) inside `tune.report`: it must pass through untouched."""
    calls: list[int] = []

    def fail(metrics: dict) -> None:
        calls.append(metrics["epoch"])
        raise error

    with pytest.raises(type(error)):
        train_trial({"epochs": 3}, blobs, [ReportMetrics(fail)])
    assert calls == [1]
    assert train_trial({"epochs": 2}, blobs).best_val_accuracy > 0.5


def test_time_limit_ends_training_after_the_epoch_that_passes_it(blobs: TrialData) -> None:
    result = train_trial({"epochs": 50}, blobs, [TimeLimit(0.0)])
    assert len(result.history) == 1
    assert result.stopped


def test_the_same_seed_gives_the_same_trial(blobs: TrialData) -> None:
    config = {"head": "mlp", "mlp_hidden": 32, "dropout": 0.2, "epochs": 3, "seed": 7}
    first, second = train_trial(config, blobs), train_trial(config, blobs)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]


def test_result_saves_and_loads_without_pickle(blobs: TrialData, tmp_path: Path) -> None:
    result = train_trial({"head": "mlp", "mlp_hidden": 16, "epochs": 2, "backbone": "x", "cut": "all"}, blobs)
    loaded = TrialResult.load(result.save(tmp_path / "trial.npz"))
    assert loaded.config == result.config
    assert loaded.history == result.history
    assert loaded.input_shape == result.input_shape
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, result.weights, strict=True))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"head": "knn"}, "head"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 12.5}, "batch_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"epochs": "many"}, "epochs"),
    ],
)
def test_bad_config_values_name_the_key(blobs: TrialData, config: dict, key: str) -> None:
    with pytest.raises(InputError, match=f"'{key}'"):
        train_trial(config, blobs)


def test_bad_trial_data_is_refused_with_the_field_named(blobs: TrialData) -> None:
    wrong_labels = TrialData(blobs.x_train, blobs.y_train[:-1], blobs.x_val, blobs.y_val, blobs.num_classes)
    with pytest.raises(InputError, match="y_train"):
        train_trial({}, wrong_labels)
    out_of_range = TrialData(blobs.x_train, blobs.y_train, blobs.x_val, blobs.y_val + 100, blobs.num_classes)
    with pytest.raises(InputError, match="y_val"):
        train_trial({}, out_of_range)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_memory_does_not_grow_over_many_trials_in_one_process() -> None:
    data = separable(features=256, train=400, val=100)
    heads = ("softmax", "mlp", "svm")
    config = {"epochs": 1, "mlp_hidden": 128}
    for head in heads:  # warm-up: first traces, allocator pools
        train_trial({**config, "head": head}, data)
    before = _rss_mib()
    for trial in range(30):
        train_trial({**config, "head": heads[trial % 3], "seed": trial}, data)
    growth = _rss_mib() - before
    assert growth < 40, f"RSS grew by {growth:.0f} MiB over 30 trials"


def test_configure_threads_sizes_pools_and_survives_a_running_tensorflow() -> None:
    script = textwrap.dedent(
        """
        import tensorflow as tf
        from automl.train import configure_threads
        print(configure_threads(1))
        tf.constant(1.0) + 1.0  # starts the runtime
        print(configure_threads(1), configure_threads(2))
        print(tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False", "1", "1"]


def test_a_diverging_trial_ends_at_the_first_non_finite_loss(blobs: TrialData) -> None:
    calls: list[dict] = []
    config = {"head": "mlp", "optimizer": "sgd", "learning_rate": 1e30, "epochs": 20}
    result = train_trial(config, blobs, [ReportMetrics(calls.append)])
    assert result.stopped
    assert len(calls) == len(result.history) < 20
    assert not np.isfinite(result.history[-1]["train_loss"])
    assert all(np.isfinite(h["train_loss"]) for h in result.history[:-1])


def test_non_finite_activations_are_refused(blobs: TrialData) -> None:
    damaged = blobs.x_val.copy()
    damaged[3, 5] = np.nan
    with pytest.raises(InputError, match=r"TrialData\.x_val: holds NaN"):
        train_trial({}, TrialData(blobs.x_train, blobs.y_train, damaged, blobs.y_val, blobs.num_classes))
