"""Training of one trial: heads, optimizers, the epoch loop, and assembly of the exported model.

Importing this package is light: Keras and TensorFlow load when `train_trial` or `assemble` first runs.
"""

from __future__ import annotations

from automl.train.assemble import assemble
from automl.train.callbacks import ReportMetrics, TargetAccuracy, TimeLimit, TrialCallback
from automl.train.config import TrainConfig, baseline_config
from automl.train.threads import configure_threads
from automl.train.trial import TrialData, TrialResult, train_trial

__all__ = [
    "ReportMetrics",
    "TargetAccuracy",
    "TimeLimit",
    "TrainConfig",
    "TrialCallback",
    "TrialData",
    "TrialResult",
    "assemble",
    "baseline_config",
    "configure_threads",
    "train_trial",
]
