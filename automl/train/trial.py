"""One trial: train a head (and the backbone's trainable rest) on cached activations, epoch by epoch.

The loop is a custom one rather than `Model.fit`: one traced function runs a whole epoch of batches
(a `tf.range` loop inside the graph) and another the whole validation pass, so a trial pays one
trace and two graph calls per epoch instead of fit's per-epoch dataset and callback machinery (about
3× faster on `all`-cut trials, where that overhead is nearly all the time: `python -m benchmarks.train_trial`).
What happens between epochs (reporting, stopping, keeping the best epoch) is callbacks
(`automl.train.callbacks`), called once per epoch with plain floats, outside the traced graphs.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.errors import InputError
from automl.train.callbacks import (
    CallbackList,
    EpochLogs,
    KeepBestEpoch,
    KeepLastEpoch,
    StopOnDivergence,
    TrialCallback,
    TrialState,
)
from automl.train.config import TrainConfig

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

EVAL_BATCH = 256
"""Validation batch: large enough to make one graph step of a head, small enough for spatial activations."""


@dataclass
class TrialData:
    """A trial's inputs: cached activations of one cut (float32) with integer labels.

    `rest` is `Backbone.trainable_rest(model, cut)` for cuts other than `all` (None or an identity
    model for `all`); its BatchNorm layers are put in inference mode, as fine-tuning on a few hundred
    images would otherwise ruin their ImageNet statistics.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    rest: keras.Model | None = None

    def check(self) -> None:
        """Raise `InputError` for arrays that cannot train a classifier, naming the field."""
        for name in ("x_train", "x_val"):
            array = getattr(self, name)
            if array.ndim < 2 or len(array) == 0:
                raise InputError(f"TrialData.{name}: need a non-empty (N, ...) array, got shape {array.shape}")
            if not np.isfinite(array).all():
                raise InputError(
                    f"TrialData.{name}: holds NaN or infinite values",
                    hint="the cached activations are damaged: `automl cache verify` finds and removes bad parts",
                )
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise InputError(
                f"TrialData: x_train rows {self.x_train.shape[1:]} and x_val rows {self.x_val.shape[1:]} differ"
            )
        for x_name, y_name in (("x_train", "y_train"), ("x_val", "y_val")):
            labels = getattr(self, y_name)
            if labels.shape != (len(getattr(self, x_name)),):
                raise InputError(f"TrialData.{y_name}: shape {labels.shape}, expected ({len(getattr(self, x_name))},)")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise InputError(f"TrialData.{y_name}: labels must lie in [0, {self.num_classes}), got {labels.max()}")
        if self.num_classes < 2:
            raise InputError(f"TrialData.num_classes: {self.num_classes}; a classifier needs at least 2 classes")


@dataclass
class TrialResult:
    """What a trial leaves behind: its metrics and the trained weights at its best epoch.

    `weights` is the trained network's full weight list (backbone rest, then head) in
    `heads.build_network` order, which `assemble` loads back without retraining.
    """

    config: dict[str, Any]
    num_classes: int
    input_shape: tuple[int, ...]
    best_val_accuracy: float
    best_val_top5: float
    best_epoch: int
    history: list[EpochLogs]
    seconds: float
    parameter_count: int
    stopped: bool
    weights: list[np.ndarray] = field(repr=False)

    def save(self, path: str | Path) -> Path:
        """One `.npz`: the weight arrays plus the metadata as a JSON string (no pickle), written atomically (a
        resumed search reads the baseline's back: a kill mid-write must not leave a truncated file)."""
        from automl.atomic import staging_file

        path = Path(path)
        meta = {k: v for k, v in asdict(self).items() if k != "weights"}
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(self.weights)}  # Any: numpy's stub of savez
        with staging_file(path) as staging, staging.open("wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)  # stub: ** vs allow_pickle
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrialResult:
        with np.load(Path(path), allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            weights = [stored[f"w{i}"] for i in range(len(stored.files) - 1)]
        meta["input_shape"] = tuple(meta["input_shape"])
        return cls(**meta, weights=weights)


def train_trial(
    config: dict[str, Any], data: TrialData, callbacks: Sequence[TrialCallback] = (), *, keep_last: bool = False
) -> TrialResult:
    """Train `config` on `data` for up to `config["epochs"]` epochs, calling `callbacks` after each one.

    Returns the best epoch's metrics and weights (`KeepBestEpoch`; the last epoch's with `keep_last`, when
    `data`'s validation rows are a held-out fold whose predictions must not choose the epoch); training
    also ends after an epoch whose training loss is not finite (`StopOnDivergence`), both always
    installed first, and after an epoch in which one of `callbacks` (e.g. `ReportMetrics`, `TimeLimit`,
    `TargetAccuracy`) set `stop_training`; `stopped` says whether it ended before its configured epochs.
    An exception from a callback ends the trial and propagates, after Keras state is freed.
    """
    import keras

    settings = TrainConfig.from_dict(config)
    data.check()
    _freeze_long_lived_heap()
    started = time.perf_counter()
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(settings.seed)
    try:
        return _Trainer(settings, data).run(dict(config), callbacks, started, keep_last)
    finally:
        keras.backend.clear_session(free_memory=True)  # one full collection: traced graphs hold cycles


class _Trainer:
    """The network, optimizer and the two traced functions of one trial."""

    def __init__(self, config: TrainConfig, data: TrialData) -> None:
        import tensorflow as tf

        from automl.train.heads import build_loss, build_network, build_optimizer

        self.config = config
        self.data = data
        if data.rest is not None:
            freeze_batch_norm(data.rest)
        input_shape = tuple(int(d) for d in data.x_train.shape[1:])
        self.network = build_network(config, data.num_classes, input_shape, data.rest, train_size=len(data.x_train))
        self.loss = build_loss(config, data.num_classes)
        self.optimizer = build_optimizer(config)
        self.optimizer.build(self.network.trainable_variables)
        self.top_k = min(5, data.num_classes)
        self.train_epoch = tf.function(self._train_epoch)
        self.evaluate = tf.function(self._evaluate)

    def run(
        self, config: dict[str, Any], callbacks: Sequence[TrialCallback], started: float, keep_last: bool
    ) -> TrialResult:
        import tensorflow as tf

        x_train, y_train = tf.constant(self.data.x_train, tf.float32), tf.constant(self.data.y_train, tf.int32)
        x_val, y_val = tf.constant(self.data.x_val, tf.float32), tf.constant(self.data.y_val, tf.int32)
        order = np.random.default_rng(self.config.seed)
        history: list[EpochLogs] = []
        best = KeepLastEpoch() if keep_last else KeepBestEpoch()
        trial = TrialState(self.network, self.config.epochs)
        hooks = CallbackList([best, StopOnDivergence(), *callbacks], trial)
        hooks.on_train_begin()
        for epoch in range(1, self.config.epochs + 1):
            epoch_start = time.perf_counter()
            permutation = tf.constant(order.permutation(len(self.data.x_train)).astype(np.int32))
            train_loss, train_accuracy = self.train_epoch(x_train, y_train, permutation)
            val_loss, val_accuracy, val_top5 = self.evaluate(x_val, y_val)
            metrics: EpochLogs = {
                "epoch": epoch,
                "val_accuracy": float(val_accuracy),
                "val_top5": float(val_top5),
                "train_loss": float(train_loss),
                "train_accuracy": float(train_accuracy),
                "val_loss": float(val_loss),
                "epoch_seconds": time.perf_counter() - epoch_start,
            }
            history.append(metrics)
            hooks.on_epoch_end(epoch, metrics)
            if trial.stop_training:
                break
        return TrialResult(
            config=config,
            num_classes=self.data.num_classes,
            input_shape=tuple(int(d) for d in self.data.x_train.shape[1:]),
            best_val_accuracy=best.logs["val_accuracy"],
            best_val_top5=best.logs["val_top5"],
            best_epoch=int(best.logs["epoch"]),
            history=history,
            seconds=time.perf_counter() - started,
            parameter_count=int(sum(np.prod(v.shape) for v in self.network.trainable_variables)),
            stopped=len(history) < self.config.epochs,
            weights=best.weights,
        )

    def _train_epoch(self, x: tf.Tensor, y: tf.Tensor, permutation: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One pass over the shuffled training set in `batch_size` steps; mean loss and accuracy."""
        import tensorflow as tf

        count = tf.shape(permutation)[0]
        batch = self.config.batch_size
        loss_sum = tf.constant(0.0)
        correct = tf.constant(0.0)
        for step in tf.range((count + batch - 1) // batch):
            indices = permutation[step * batch : tf.minimum((step + 1) * batch, count)]
            x_batch, y_batch = tf.gather(x, indices), tf.gather(y, indices)
            with tf.GradientTape() as tape:
                scores = self.network(x_batch, training=True)
                loss = self.loss(y_batch, scores)
                objective = tf.add_n([loss, *self.network.losses])
            self._apply(tape.gradient(objective, self.network.trainable_variables))
            size = tf.cast(tf.shape(indices)[0], tf.float32)
            loss_sum += loss * size
            correct += tf.reduce_sum(tf.cast(tf.math.in_top_k(y_batch, scores, 1), tf.float32))
        total = tf.cast(count, tf.float32)
        return loss_sum / total, correct / total

    def _apply(self, gradients: list[tf.Tensor]) -> None:
        """One optimizer step through `update_step`, the per-variable rule every Keras optimizer implements.

        `apply_gradients` would route through tf.distribute's merge call, which keeps every traced
        graph that calls it alive for the life of the process (also under `Model.fit`: two graphs,
        about 2 MB, per trial, measured with Keras 3.15 / TF 2.21); a reused Ray actor would grow
        without bound. No clipping, weight decay or loss scaling is configured, so the step is the same.
        """
        import tensorflow as tf

        learning_rate = tf.cast(self.optimizer.learning_rate, tf.float32)
        for gradient, variable in zip(gradients, self.network.trainable_variables, strict=True):
            self.optimizer.update_step(gradient, variable, learning_rate)
        self.optimizer.iterations.assign_add(1)

    def _evaluate(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Validation loss, top-1 and top-k accuracy over the whole set, in `EVAL_BATCH` steps."""
        import tensorflow as tf

        count = tf.shape(x)[0]
        loss_sum = tf.constant(0.0)
        top1 = tf.constant(0.0)
        top_k = tf.constant(0.0)
        for start in tf.range(0, count, EVAL_BATCH):
            x_batch, y_batch = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
            scores = self.network(x_batch, training=False)
            loss_sum += self.loss(y_batch, scores) * tf.cast(tf.shape(y_batch)[0], tf.float32)
            top1 += tf.reduce_sum(tf.cast(tf.math.in_top_k(y_batch, scores, 1), tf.float32))
            top_k += tf.reduce_sum(tf.cast(tf.math.in_top_k(y_batch, scores, self.top_k), tf.float32))
        total = tf.cast(count, tf.float32)
        return loss_sum / total, top1 / total, top_k / total


def _freeze_long_lived_heap() -> None:
    """Hide what is alive before the first trial (TensorFlow's ~400,000 import-time objects) from the collector.

    Each trial ends with a full garbage collection, which its traced graphs' reference cycles need to be
    freed; walking TensorFlow's import-time heap made that collection half of an `all`-cut trial (0.5 s
    of 1.3 s, measured on this machine). Frozen objects are the process's long-lived ones; what trials
    allocate afterwards is collected as before. Done once per process (a Ray actor runs many trials).
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def freeze_batch_norm(model: keras.Layer) -> None:
    """BatchNorm layers of the trainable rest run in inference mode with fixed statistics (Keras 3 semantics)."""
    import keras

    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        freeze_batch_norm(layer)
