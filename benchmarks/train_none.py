"""What cut `none` (the whole backbone trainable, from pixels) costs: one training epoch on real photos.

    python -m benchmarks.train_none [--dataset ../shared/datasets/trashnet] [--backbone efficientnet_lite0]
                                    [--photos 256] [--threads 2]

Runs `train_trial` (the search's own trial loop) for 2 epochs of `--photos` decoded photos with cut `none`
(BatchNorm frozen, Adam, batch 32) and takes the second epoch's seconds (the first includes tracing); the
seconds per photo then give an epoch of a whole development pool, and the forward-only extraction rate of the
cache is measured on the same photos for comparison.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from automl.backbones import get_backbone
from automl.cache.extract import decode_file, frozen_forward
from automl.data.dataset import scan_dataset
from automl.train import TrialData, configure_threads, train_trial
from benchmarks import results as results_md

WEIGHTS = "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/datasets/trashnet")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_threads(args.threads)

    backbone = get_backbone(args.backbone)
    dataset = scan_dataset(args.dataset, train=0.7, val=0.15, test=0.15, seed=0)
    pool = [r for r in dataset.records if r.split != "test"]
    chosen = pool[:: max(1, len(pool) // args.photos)][: args.photos]
    pixels = np.stack([decode_file(r.path, backbone.resize) for r in chosen])
    labels = np.array([r.label for r in chosen])

    forward = frozen_forward(backbone, backbone.build(WEIGHTS), ["all"])
    forward(pixels[:32])  # trace
    start = time.perf_counter()
    for offset in range(0, len(pixels), 32):
        forward(pixels[offset : offset + 32])
    forward_rate = len(pixels) / (time.perf_counter() - start)

    x = pixels.astype(np.float32)
    rest = backbone.trainable_rest(backbone.build(WEIGHTS), "none")
    data = TrialData(x, labels, x[:64], labels[:64], len(dataset.classes), rest)
    config = {"cut": "none", "head": "softmax", "optimizer": "adam", "learning_rate": 1e-4, "epochs": 2}
    result = train_trial(config, data)
    epoch_s = result.history[-1]["epoch_seconds"]  # includes the 64-photo validation pass
    train_rate = len(pixels) / epoch_s
    pool_epoch_min = len(pool) / train_rate / 60
    results = {
        "photos": len(pixels),
        "epoch_seconds": epoch_s,
        "train_photos_per_s": train_rate,
        "forward_photos_per_s": forward_rate,
        "pool": len(pool),
        "pool_epoch_minutes": pool_epoch_min,
        "trainable_parameters": result.parameter_count,
    }
    summary = (
        f"{args.backbone}, cut `none` ({result.parameter_count:,} trainable parameters), {len(pixels)} trashnet "
        f"photos, batch 32, Adam, {args.threads} TF threads: one training epoch (plus a 64-photo validation pass) "
        f"took {epoch_s:.1f} s = **{train_rate:.1f} photos/s**, against {forward_rate:.1f} photos/s for the "
        f"frozen forward pass that fills the cache. An epoch of trashnet's {len(pool)}-photo development pool "
        f"from pixels is then about **{pool_epoch_min:.1f} min** (and every epoch pays it again, where cached "
        "cuts pay the frozen part once). The machine was shared with other agents' jobs."
    )
    results_md.publish("train_none", f"Cost of cut `none`: training from pixels ({args.backbone})", results, summary)


if __name__ == "__main__":
    main()
