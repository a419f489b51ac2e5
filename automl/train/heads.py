"""Heads, their losses and optimizers: the parts a trial trains on top of the backbone's pooled features.

Every head outputs unnormalised scores (logits for `softmax`/`mlp`, margins for `svm`); the softmax
that turns them into probabilities is added only by `assemble`, so training uses the numerically stable
`from_logits` cross-entropy and the SVM's squared hinge sees raw margins.

The SVM is trained here by gradient descent (squared hinge, one-vs-rest, L2 as in Tang 2013) rather
than fitted by liblinear: the same head then serves every cut (the rest trains through it), reports
each epoch so ASHA can prune it, and on animals10 Lite0 vectors it reaches the softmax head's accuracy
in under a second (`python -m benchmarks.train_trial`).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from automl.train.config import TrainConfig

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def build_head(config: TrainConfig, num_classes: int, *, train_size: int | None = None) -> keras.Sequential:
    """The head as a Sequential of standard layers (safe-mode serialisable).

    Output layers start at zero, as logistic regression and liblinear do: the linear heads are convex,
    and a random start on unnormalised features (pooled activations reach norms in the tens) begins
    with large wrong margins that cost the short trials several epochs.

    `train_size` sets the SVM's L2 strength (see `svm_l2`); without it (assembling a trained head) the
    layer carries no regulariser, which changes nothing at inference.
    """
    if config.head == "mlp":
        layers = [
            keras.layers.Dense(config.mlp_hidden, activation="relu", name="hidden"),
            keras.layers.Dropout(config.dropout, name="dropout"),
            keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits"),
        ]
    elif config.head == "svm":
        regularizer = keras.regularizers.L2(svm_l2(config.svm_c, train_size, num_classes)) if train_size else None
        layers = [
            keras.layers.Dense(num_classes, kernel_initializer="zeros", kernel_regularizer=regularizer, name="margins")
        ]
    else:
        layers = [keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits")]
    return keras.Sequential(layers, name=f"{config.head}_head")


def build_network(
    config: TrainConfig,
    num_classes: int,
    input_shape: tuple[int, ...],
    rest: keras.Model | None,
    *,
    train_size: int | None = None,
) -> keras.Model:
    """What a trial trains: cached activation → backbone's trainable rest (if any) → head → scores.

    `assemble` rebuilds exactly this network so that a trial's weight list loads back into it.
    """
    inputs = keras.Input(shape=input_shape, name="activation")
    features = rest(inputs) if rest is not None else inputs
    scores = build_head(config, num_classes, train_size=train_size)(features)
    return keras.Model(inputs, scores, name="trained")


def svm_l2(c: float, train_size: int, num_classes: int) -> float:
    """The per-batch L2 factor equal to liblinear's objective ½‖W‖² + C·Σᵢ Σₖ sqhinge, divided by N·K.

    Training minimises the mean squared hinge over samples and classes, so the regulariser must be
    scaled by the same 1/(N·K) for `C` to mean what it means in LinearSVC and in Tang (2013).
    """
    return 1.0 / (2.0 * c * train_size * num_classes)


def build_loss(config: TrainConfig, num_classes: int) -> Loss:
    """Per-batch mean loss from integer labels and scores (without the L2 term, which `model.losses` adds)."""
    if config.head == "svm":

        def squared_hinge_one_vs_rest(labels: tf.Tensor, margins: tf.Tensor) -> tf.Tensor:
            signs = 2.0 * tf.one_hot(labels, num_classes, dtype=margins.dtype) - 1.0
            return tf.reduce_mean(tf.square(tf.nn.relu(1.0 - signs * margins)))

        return squared_hinge_one_vs_rest

    def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    return cross_entropy


def build_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """SGD with the configured momentum, or Adam with the configured epsilon."""
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    return keras.optimizers.Adam(learning_rate=config.learning_rate, epsilon=config.epsilon)
