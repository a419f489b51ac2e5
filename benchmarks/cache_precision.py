"""Does storing bottlenecks as float16 cost accuracy? Logistic regression on float32 vs float16 features.

    python -m benchmarks.cache_precision [--backbone efficientnet_lite0] [--dataset data/animals10]

Pooled (`all`) features of the whole dataset, computed once in float32; a logistic regression is fitted on
the train split and scored on val + test, once on the float32 features and once on the same features
rounded to float16 and back (exactly what the cache returns). For the spatial `top` cut, the activation is
rounded to float16, run through the trainable rest (initialised with the pretrained weights) and the
resulting pooled features are scored by the float32 classifier. Writes benchmarks/out/cache_precision.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from automl.backbones import get_backbone
from automl.cache.extract import decode_file, frozen_forward
from automl.data.dataset import scan_dataset
from automl.machine import describe
from benchmarks import results as results_md


def as_cached(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--dataset", default="data/animals10")
    args = parser.parse_args()

    backbone = get_backbone(args.backbone)
    records = scan_dataset(args.dataset, train=0.7, val=0.15, test=0.15, seed=0).records
    model = backbone.build(args.weights)
    forward = frozen_forward(backbone, model, ["all", "top"])
    pooled, top = [], []
    for offset in range(0, len(records), 32):
        pixels = np.stack([decode_file(r.path, backbone.resize) for r in records[offset : offset + 32]])
        outputs = forward(pixels)
        pooled.append(outputs["all"])
        top.append(outputs["top"])
    features, spatial = np.concatenate(pooled), np.concatenate(top)
    labels = np.array([r.label for r in records])
    train = np.array([r.split == "train" for r in records])

    def fitted(x: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
        scaler = StandardScaler().fit(x[train])
        return scaler, LogisticRegression(max_iter=3000, C=0.5).fit(scaler.transform(x[train]), labels[train])

    def predict(model: tuple[StandardScaler, LogisticRegression], x: np.ndarray) -> np.ndarray:
        return model[1].predict(model[0].transform(x[~train]))

    reference = fitted(features)
    on_float16 = fitted(as_cached(features))
    rest = backbone.trainable_rest(model, "top")
    through_rest = rest.predict(as_cached(spatial), batch_size=64, verbose=0)
    truth = labels[~train]
    results = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backbone": args.backbone,
        "images": len(records),
        "scored": int((~train).sum()),
        "all_float32_accuracy": float(np.mean(predict(reference, features) == truth)),
        "all_float16_accuracy": float(np.mean(predict(on_float16, as_cached(features)) == truth)),
        "all_prediction_agreement": float(
            np.mean(predict(on_float16, as_cached(features)) == predict(reference, features))
        ),
        "all_max_relative_error": float(np.max(np.abs(as_cached(features) - features)) / np.max(np.abs(features))),
        "top_float16_through_rest_accuracy": float(np.mean(predict(reference, through_rest) == truth)),
        "top_float16_pooled_max_abs_diff": float(np.max(np.abs(through_rest - features))),
    }
    results_md.publish("cache_precision", "float16 bottleneck storage (automl.cache)", results, summary(results))


def summary(r: dict) -> str:
    rows = [
        {"features": "pooled `all`, float32", "accuracy (val+test)": f"{r['all_float32_accuracy']:.2%}"},
        {"features": "pooled `all`, stored float16", "accuracy (val+test)": f"{r['all_float16_accuracy']:.2%}"},
        {
            "features": "spatial `top`, stored float16, through the rest",
            "accuracy (val+test)": f"{r['top_float16_through_rest_accuracy']:.2%}",
        },
    ]
    return (
        f"{r['backbone']} on {r['images']} photos of animals10, logistic regression fitted on train, scored on "
        f"{r['scored']} val+test photos. Predictions on float16 vs float32 pooled features agree on "
        f"{r['all_prediction_agreement']:.2%}; largest relative rounding error {r['all_max_relative_error']:.1e}; "
        f"`top` through the rest differs from float32 pooled features by at most "
        f"{r['top_float16_pooled_max_abs_diff']:.1e}. Hence the cache stores float16.\n\n" + results_md.table(rows)
    )


if __name__ == "__main__":
    main()
