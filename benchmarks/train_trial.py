"""Seconds per trial for each head and optimizer, on animals10's EfficientNet-Lite0 activations.

    python -m benchmarks.train_trial [--cut all|top] [--repeats 5] [--epochs 20] [--batch-size 32] [--threads 1]

The features come from the bottleneck cache (`$AUTOML_CACHE`, built on first use), split as the
default recipe splits them (70/15/15, seed 0). Each configuration runs `--repeats` trials (seeds 0..n-1)
in this one process, as a reused Ray actor would, with TensorFlow's pools set to `--threads`; the first
trial of the process is run once more beforehand so that one-off start-up (oneDNN, allocator) is not
charged to a head. For `all`, the row `softmax via Model.fit` trains the same softmax head with Keras'
`fit` (validation every epoch), the baseline the custom loop replaced. For `top`, each trial trains a
fresh copy of the backbone's last block (`trainable_rest`, made outside the timing, as the search
makes it before calling `train_trial`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.results import publish, table

HEADS = ("softmax", "mlp", "svm")
OPTIMIZERS = ("adam", "sgd")


def animals10_features(cut: str = "all") -> tuple[Any, Callable[[], Any] | None]:
    """TrialData of the default split's train and val Lite0 activations of `cut`, from the shared cache,
    and for cuts other than `all` a factory of fresh trainable rests."""
    from automl.backbones import get_backbone
    from automl.cache import BottleneckCache
    from automl.data.dataset import scan_dataset
    from automl.paths import resolve_dataset
    from automl.train import TrialData

    dataset = scan_dataset(resolve_dataset("animals10"), train=0.7, val=0.15, test=0.15, seed=0)
    backbone = get_backbone("efficientnet_lite0")
    cache = BottleneckCache()
    train, val = dataset.split("train"), dataset.split("val")
    cache.ensure(backbone, "default", [cut], train + val, progress=True)

    def arrays(records: list) -> tuple[Any, Any]:
        import numpy as np

        x = cache.load(backbone, "default", cut, [r.sha1 for r in records])
        return x, np.array([r.label for r in records])

    (x_train, y_train), (x_val, y_val) = arrays(train), arrays(val)
    data = TrialData(x_train, y_train, x_val, y_val, len(dataset.classes))
    if cut == "all":
        return data, None
    model = backbone.build("default")
    return data, lambda: backbone.trainable_rest(model, cut)


def time_trials(data: Any, rests: Callable[[], Any] | None, config: dict[str, Any], repeats: int) -> dict[str, Any]:
    from automl.train import train_trial

    seconds, accuracies = [], []
    for seed in range(repeats):
        data.rest = rests() if rests else None
        start = time.perf_counter()
        result = train_trial({**config, "seed": seed}, data)
        seconds.append(time.perf_counter() - start)
        accuracies.append(result.best_val_accuracy)
    return _summary(seconds, accuracies)


def time_keras_fit(data: Any, epochs: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """The same softmax head trained with `Model.fit`, validation each epoch, as a reference."""
    import keras

    seconds, accuracies = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input(data.x_train.shape[1:]), keras.layers.Dense(data.num_classes)])
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(5)],
        )
        history = model.fit(
            data.x_train,
            data.y_train,
            batch_size=batch_size,
            epochs=epochs,
            validation_data=(data.x_val, data.y_val),
            verbose=0,
        )
        seconds.append(time.perf_counter() - start)
        accuracies.append(max(history.history["val_accuracy"]))
    return _summary(seconds, accuracies)


def _summary(seconds: list[float], accuracies: list[float]) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "median s / trial": round(median, 2),
        "max s": round(max(seconds), 2),
        "trials / min (one process)": round(60 / median, 1),
        "best val (median)": round(statistics.median(accuracies), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", choices=("all", "top"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads (a trial's CPUs)")
    args = parser.parse_args()

    from automl.train import baseline_config, configure_threads, train_trial

    configure_threads(args.threads)
    data, rests = animals10_features(args.cut)
    base = {**baseline_config(), "cut": args.cut, "epochs": args.epochs, "batch_size": args.batch_size}
    data.rest = rests() if rests else None
    train_trial({**base, "epochs": 1}, data)  # process start-up, not charged to any head
    rows = []
    for head in HEADS:
        for optimizer in OPTIMIZERS:
            config = {**base, "head": head, "optimizer": optimizer}
            if optimizer == "sgd":
                config["learning_rate"] = 0.01
            rows.append({"head": head, "optimizer": optimizer, **time_trials(data, rests, config, args.repeats)})
    if args.cut == "all":
        rows.append(
            {
                "head": "softmax via Model.fit",
                "optimizer": "adam",
                **time_keras_fit(data, args.epochs, args.batch_size, args.repeats),
            }
        )
    activation = "×".join(str(d) for d in data.x_train.shape[1:])
    shape = f"{len(data.x_train)} train and {len(data.x_val)} val activations of {activation}"
    publish(
        "train_trial" if args.cut == "all" else f"train_trial_{args.cut}",
        f"Seconds per {args.cut}-cut trial, each head (animals10, EfficientNet-Lite0 activations)",
        rows,
        f"{shape}; {args.epochs} epochs, batch {args.batch_size}, {args.threads} TF thread(s), "
        f"{args.repeats} trials per row (median); mlp hidden 512, dropout 0.2; sgd at lr 0.01.\n\n" + table(rows),
        f"python -m benchmarks.train_trial --cut {args.cut} --repeats {args.repeats} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --threads {args.threads}",
    )


if __name__ == "__main__":
    main()
