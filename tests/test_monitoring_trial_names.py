"""Trial labels: what Ray's dashboard names a trial actor, and Optuna's dashboard shows as `label`."""

from __future__ import annotations

from automl.monitoring.trial_names import trial_label


def test_labels_say_backbone_cut_head_settings_optimizer_and_learning_rate():
    svm = {
        "backbone": "efficientnet_lite1",
        "cut": "all",
        "head": "svm",
        "svm_c": 9.2,
        "optimizer": "adam",
        "learning_rate": 0.003,
        "epsilon": 1e-7,
        "batch_size": 32,
    }
    assert trial_label(svm) == "lite1/all svm C=9.2 adam lr=0.003"
    mlp = {
        "backbone": "resnet50",
        "cut": "top",
        "head": "mlp",
        "mlp_hidden": 512,
        "dropout": 0.2,
        "optimizer": "sgd",
        "learning_rate": 0.01,
    }
    assert trial_label(mlp) == "resnet50/top mlp(512, dropout 0.2) sgd lr=0.01"
    assert trial_label({"backbone": "efficientnet_b0", "head": "softmax"}) == "efficientnet_b0/? softmax ?"
