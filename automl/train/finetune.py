"""Linear probe, then fine-tune (Kumar et al. 2022): train a backbone's layers after a cut on cached activations.

The head starts from a linear probe's weights (logistic regression on the pooled `all` features), so the first
steps move the backbone's top along a good head instead of distorting pretrained features to fit a zero head;
the learning rate is the small one of fine-tuning (about 1e-5..1e-3) with cosine decay, and BatchNorm keeps its
ImageNet statistics (inference mode). Training is bounded by wall time: after each epoch the cosine's horizon
shrinks to the epochs that still fit, so a fine-tuning run always finishes its schedule in its share of the
budget rather than being cut off at a high learning rate.

Memory: activations stay in the cache's storage type (float16, `BottleneckCache.load(dtype=np.float16)`) and
each batch is gathered and converted to float32 as it is trained on; flip views are extra arrays indexed by the
same rows, never concatenated into a copy. The `half` cut of Lite0 (14×14×80) then holds 31 KB per photo and
view instead of 63 KB, and nothing but one batch is ever float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from automl.cache.views import ORIGINAL
from automl.errors import InputError
from automl.train.trial import TrialResult, freeze_batch_norm

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.cache import BottleneckCache

EVAL_BATCH = 128

Report = Callable[[dict[str, Any]], None]
"""Called with each epoch's metrics."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning's own settings, apart from the head search's (whose learning rates reach 1e-1)."""

    learning_rate: float = 1e-4
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    batch_size: int = 32
    epochs: int = 10
    keep: Literal["last", "best"] = "last"
    """`last`: the weights at the end of the cosine schedule (no choice made on the held-out rows, so their
    score is an honest estimate); `best`: the epoch with the best held-out log-loss."""
    seed: int = 0

    def check(self) -> None:
        rules = {
            "learning_rate": self.learning_rate > 0,
            "optimizer": self.optimizer in ("adam", "sgd"),
            "momentum": 0 <= self.momentum < 1,
            "batch_size": self.batch_size > 0,
            "epochs": self.epochs > 0,
            "keep": self.keep in ("last", "best"),
        }
        for key, ok in rules.items():
            if not ok:
                raise InputError(f"fine-tuning config key {key!r}: {getattr(self, key)!r} is out of range")


@dataclass(frozen=True)
class HeadWeights:
    """A linear head on the pooled features: logits = features @ kernel + bias (a Keras Dense layer's weights)."""

    kernel: np.ndarray
    """(feature_size, num_classes)"""
    bias: np.ndarray
    """(num_classes,)"""


@dataclass
class FoldData:
    """One fold of the development pool at one cut, each part in one or more views (the first is the original).

    `x_train[view]` are all indexed by the same training rows (a flip view is its original's row, so it lies in
    its original's fold by construction); `x_held_out[view]` likewise, for scoring test-time augmentation.
    """

    x_train: dict[str, np.ndarray]
    y_train: np.ndarray
    x_held_out: dict[str, np.ndarray]
    y_held_out: np.ndarray
    num_classes: int

    @classmethod
    def from_cache(
        cls,
        cache: BottleneckCache,
        backbone: Backbone,
        weights: str,
        cut: str,
        sha1s: Sequence[str],
        labels: np.ndarray,
        held_out: np.ndarray,
        *,
        num_classes: int,
        views: Sequence[str] = (ORIGINAL,),
        held_out_views: Sequence[str] = (ORIGINAL,),
        dtype: Any = np.float16,
    ) -> FoldData:
        """Read the fold from the cache: `held_out` is a boolean mask over `sha1s` (e.g. `folds == k`)."""
        labels = np.asarray(labels)
        held_out = np.asarray(held_out, dtype=bool)
        train_sha1s = [sha1 for sha1, out in zip(sha1s, held_out, strict=True) if not out]
        out_sha1s = [sha1 for sha1, out in zip(sha1s, held_out, strict=True) if out]
        x_train = {view: cache.load(backbone, weights, cut, train_sha1s, view=view, dtype=dtype) for view in views}
        x_held_out = {
            view: cache.load(backbone, weights, cut, out_sha1s, view=view, dtype=dtype) for view in held_out_views
        }
        return cls(x_train, labels[~held_out], x_held_out, labels[held_out], num_classes)

    @property
    def train_rows(self) -> int:
        return len(self.y_train) * len(self.x_train)

    def train_batch(self, indices: np.ndarray) -> np.ndarray:
        """float32 rows for sample indices in [0, train_rows): index i is view i // N, row i % N."""
        views = list(self.x_train.values())
        rows = len(self.y_train)
        out = np.empty((len(indices), *views[0].shape[1:]), dtype=np.float32)
        for number, view in enumerate(views):
            chosen = (indices // rows) == number
            out[chosen] = view[indices[chosen] % rows]
        return out


@dataclass
class FinetuneResult:
    """A fine-tuned rest + head (`trial` loads into `assemble` like any trial) and its held-out predictions."""

    trial: TrialResult
    probabilities: dict[str, np.ndarray] = field(repr=False)
    """view → (held-out rows, classes) softmax probabilities of the kept weights; their mean over views is the
    out-of-fold score of test-time augmentation."""
    held_out_accuracy: float
    held_out_log_loss: float
    epochs_done: int
    epochs_planned: int


def probe_head(features: np.ndarray, labels: np.ndarray, *, c: float = 1.0, max_iter: int = 1000) -> HeadWeights:
    """Multinomial logistic regression (L-BFGS) on standardised pooled features, folded into one linear layer.

    The standardisation (w / scale, b − Σ w·mean / scale) is folded in, so the head applies to the raw pooled
    features that the backbone's trainable rest outputs.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(features), labels)
    if not np.array_equal(model.classes_, np.arange(len(model.classes_))):
        raise InputError(
            f"probe_head: labels must be 0..K-1 with every class present, got {model.classes_.tolist()}",
            hint="probe on a training set that holds every class",
        )
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sigmoid(w·x + b) = softmax([0, w·x + b])
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    kernel = (coef / scaler.scale_).T
    bias = intercept - (coef * scaler.mean_ / scaler.scale_).sum(axis=1)
    return HeadWeights(kernel.astype(np.float32), bias.astype(np.float32))


def cosine_rate(base: float, step: int, total_steps: int) -> float:
    """Cosine decay from `base` to 0 over `total_steps` (Loshchilov & Hutter 2017, no restarts)."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))


def finetune(
    backbone: Backbone,
    weights: str,
    cut: str,
    head: HeadWeights,
    data: FoldData,
    config: FinetuneConfig | Mapping[str, Any] = FinetuneConfig(),
    *,
    time_limit: float | None = None,
    report: Report | None = None,
) -> FinetuneResult:
    """Fine-tune `backbone`'s layers after `cut` with a softmax head starting at `head`, on one fold.

    `report(metrics)` is called after each epoch (`epoch`, `held_out_accuracy`, `held_out_log_loss`,
    `train_loss`, `learning_rate`, `epoch_seconds`); `time_limit` (seconds) bounds the whole call: the cosine
    schedule is shortened to the epochs that fit, and the weights of the last epoch done are kept.
    """
    import keras

    settings = config if isinstance(config, FinetuneConfig) else _config_from(config)
    settings.check()
    if cut == "all":
        raise InputError("finetune: cut 'all' has nothing to fine-tune", hint="use 'top' or 'half'")
    if head.kernel.shape != (backbone.feature_size, data.num_classes):
        raise InputError(
            f"finetune: head kernel {head.kernel.shape}, expected ({backbone.feature_size}, {data.num_classes})",
            hint="probe the backbone's pooled `all` features of the same classes",
        )
    started = time.perf_counter()
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(settings.seed)
    try:
        return _FineTuner(backbone, weights, cut, head, data, settings).run(started, time_limit, report)
    finally:
        keras.backend.clear_session(free_memory=True)


class _FineTuner:
    def __init__(
        self, backbone: Backbone, weights: str, cut: str, head: HeadWeights, data: FoldData, config: FinetuneConfig
    ) -> None:
        import keras
        import tensorflow as tf

        from automl.train.config import TrainConfig
        from automl.train.heads import build_network

        self.config, self.data, self.cut = config, data, cut
        rest = backbone.trainable_rest(backbone.build(weights), cut)
        freeze_batch_norm(rest)
        self.head_config = TrainConfig(head="softmax", optimizer=config.optimizer, learning_rate=config.learning_rate)
        input_shape = tuple(int(d) for d in data.x_train[ORIGINAL].shape[1:])
        self.network = build_network(self.head_config, data.num_classes, input_shape, rest)
        self.network.layers[-1].set_weights([head.kernel, head.bias])
        if config.optimizer == "sgd":
            self.optimizer = keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
        else:
            self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        self.optimizer.build(self.network.trainable_variables)
        shape = (None, *input_shape)
        self.step = tf.function(
            self._step,
            input_signature=[
                tf.TensorSpec(shape, tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((), tf.float32),
            ],
        )
        self.predict = tf.function(self._predict, input_signature=[tf.TensorSpec(shape, tf.float32)])

    def run(self, started: float, time_limit: float | None, report: Report | None) -> FinetuneResult:
        data, config = self.data, self.config
        order = np.random.default_rng(config.seed)
        steps_per_epoch = math.ceil(data.train_rows / config.batch_size)
        planned = config.epochs
        history: list[dict[str, float]] = []
        kept: tuple[list[np.ndarray], dict[str, np.ndarray], dict[str, float]] | None = None
        step = 0
        epoch = 0
        while epoch < planned:
            epoch += 1
            epoch_start = time.perf_counter()
            permutation = order.permutation(data.train_rows)
            loss_sum = 0.0
            for start in range(0, data.train_rows, config.batch_size):
                indices = permutation[start : start + config.batch_size]
                rate = cosine_rate(config.learning_rate, step, planned * steps_per_epoch)
                loss = self.step(data.train_batch(indices), data.y_train[indices % len(data.y_train)], rate)
                loss_sum += float(loss) * len(indices)
                step += 1
            probabilities = {view: self._probabilities(x) for view, x in data.x_held_out.items()}
            metrics = {
                "epoch": epoch,
                **_scores(probabilities[ORIGINAL], data.y_held_out),
                "train_loss": loss_sum / data.train_rows,
                "learning_rate": rate,
                "epoch_seconds": time.perf_counter() - epoch_start,
            }
            history.append(metrics)
            if config.keep == "last" or kept is None or metrics["held_out_log_loss"] < kept[2]["held_out_log_loss"]:
                kept = (self.network.get_weights(), probabilities, metrics)
            if report is not None:
                report(dict(metrics))
            if not math.isfinite(metrics["train_loss"]):
                break
            if time_limit is not None:
                planned = _epochs_that_fit(planned, epoch, history, time_limit - (time.perf_counter() - started))
        assert kept is not None
        weights, probabilities, best = kept
        trial = TrialResult(
            config={**asdict(self.head_config), "cut": self.cut, "finetune": asdict(config)},
            num_classes=data.num_classes,
            input_shape=tuple(int(d) for d in data.x_train[ORIGINAL].shape[1:]),
            best_val_accuracy=best["held_out_accuracy"],
            best_val_top5=0.0,
            best_epoch=int(best["epoch"]),
            history=history,
            seconds=time.perf_counter() - started,
            parameter_count=int(sum(np.prod(v.shape) for v in self.network.trainable_variables)),
            stopped=epoch < config.epochs,
            weights=weights,
        )
        return FinetuneResult(
            trial, probabilities, best["held_out_accuracy"], best["held_out_log_loss"], epoch, config.epochs
        )

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        chunks = [
            self.predict(x[start : start + EVAL_BATCH].astype(np.float32)).numpy()
            for start in range(0, len(x), EVAL_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.empty((0, self.data.num_classes), np.float32)

    def _step(self, x, y, rate):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = self.network(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        gradients = tape.gradient(loss, self.network.trainable_variables)
        # update_step per variable, as trial.py does: apply_gradients' merge call keeps traced graphs alive
        for gradient, variable in zip(gradients, self.network.trainable_variables, strict=True):
            self.optimizer.update_step(gradient, variable, rate)
        self.optimizer.iterations.assign_add(1)
        return loss

    def _predict(self, x):
        import tensorflow as tf

        return tf.nn.softmax(self.network(x, training=False))


def _config_from(values: Mapping[str, Any]) -> FinetuneConfig:
    known = {spec.name for spec in fields(FinetuneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"fine-tuning config: unknown key(s) {unknown}", hint=f"use some of {sorted(known)}")
    return FinetuneConfig(**values)


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if not len(labels):
        return {"held_out_accuracy": float("nan"), "held_out_log_loss": float("nan")}
    chosen = probabilities[np.arange(len(labels)), labels]
    return {
        "held_out_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "held_out_log_loss": float(-np.mean(np.log(np.clip(chosen, 1e-12, 1.0)))),
    }


def _epochs_that_fit(planned: int, done: int, history: list[dict[str, float]], seconds_left: float) -> int:
    """The schedule's new length: the epochs done plus those that fit in the time left at the recent epoch pace
    (the first epoch includes tracing, so it is left out of the pace once there is another)."""
    recent = [h["epoch_seconds"] for h in history[1:]] or [history[0]["epoch_seconds"]]
    pace = float(np.mean(recent))
    return max(done, min(planned, done + int(max(seconds_left, 0.0) // pace)))
