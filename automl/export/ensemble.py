"""ONE Keras model from raw RGB photos to the weighted average of several members' calibrated probabilities.

A member is a backbone + cut + head (a trial's trained rest and head, or a linear head such as LR-CV's
refit) with its temperature and ensemble weight. The photo is decoded once, at the input resize that
covers every member (the largest size and the widest crop: the largest member's own resize for the Lite
family); a member needing a smaller size or a narrower crop gets it in the graph (`CropResize`, Pillow's
coefficients). Members of the same backbone and weights share one forward pass of its frozen part, so a
backbone costs its inference time once however many heads sit on it.

    pixels ─┬─ [CropResize] ─ backbone A frozen ─┬─ head 1 ─ /T₁ ─ softmax ─┐
            │                                    └─ head 2 ─ /T₂ ─ softmax ─┼─ Σ wᵢ·pᵢ ─ probabilities
            └─ backbone B frozen ──────────────── head 3 ─ /T₃ ─ softmax ─┘
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from automl.data.resize import Resize
from automl.errors import InputError
from automl.selection.linear import LinearHead

if TYPE_CHECKING:
    import keras

    from automl.backbones.base import Backbone
    from automl.train.trial import TrialResult


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: `head` is a trained trial (any cut) or a linear head on pooled vectors (`all`)."""

    backbone: Backbone
    cut: str
    head: LinearHead | TrialResult
    temperature: float = 1.0
    weight: float = 1.0
    weights: str = "default"
    """The backbone's weights (`Backbone.build`)."""

    @property
    def num_classes(self) -> int:
        return self.head.bias.shape[0] if isinstance(self.head, LinearHead) else self.head.num_classes

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what `automl.json` and the report say about this member."""
        head = "linear" if isinstance(self.head, LinearHead) else self.head.config.get("head", "softmax")
        return {
            "backbone": self.backbone.name,
            "weights": self.weights,
            "cut": self.cut,
            "head": head,
            "temperature": self.temperature,
            "weight": self.weight,
        }


def input_resize(members: Sequence[Member]) -> Resize:
    """The one decode that covers every member: the largest size, the widest crop, the largest's filter."""
    largest = max(members, key=lambda m: (m.backbone.resize.size, m.backbone.resize.crop_fraction))
    widest = max(m.backbone.resize.crop_fraction for m in members)
    return Resize(largest.backbone.resize.size, widest, largest.backbone.resize.resample)


def linear_network(head: LinearHead, name: str) -> keras.Model:
    """A pooled vector → logits as one Dense layer carrying the head's kernel and bias."""
    import keras

    features = keras.Input(shape=(head.kernel.shape[0],), name=f"{name}_features")
    dense = keras.layers.Dense(head.kernel.shape[1], name=f"{name}_dense")
    logits = dense(features)
    dense.set_weights([head.kernel.astype("float32"), head.bias.astype("float32")])
    return keras.Model(features, logits, name=name)


def _check(members: Sequence[Member], labels: Sequence[str]) -> None:
    if not members:
        raise InputError("an ensemble needs at least one member")
    for index, member in enumerate(members):
        where = f"ensemble member {index} ({member.backbone.name}, cut {member.cut})"
        if member.num_classes != len(labels):
            raise InputError(
                f"{where}: trained on {member.num_classes} classes but {len(labels)} labels given",
                hint="every member must be trained on the same dataset's labels, in label-index order",
            )
        if isinstance(member.head, LinearHead):
            if member.cut != "all":
                raise InputError(f"{where}: a linear head reads pooled vectors, so its cut must be 'all'")
            if member.head.kernel.shape[0] != member.backbone.feature_size:
                raise InputError(
                    f"{where}: the linear head takes {member.head.kernel.shape[0]} features but"
                    f" {member.backbone.name} gives {member.backbone.feature_size}"
                )
        if member.weight < 0:
            raise InputError(f"{where}: weight {member.weight} is negative")
    if sum(m.weight for m in members) <= 0:
        raise InputError("ensemble weights sum to 0: give at least one member a positive weight")


def assemble_ensemble(
    members: Sequence[Member], labels: Sequence[str], *, temperature: float = 1.0
) -> tuple[keras.Model, Resize]:
    """The ensemble model (float32 pixels at the returned resize, in [0, 255]) → class probabilities.

    `temperature` recalibrates the blend: softmax(log(Σ wᵢ·pᵢ) / temperature), fitted on the blend's OOF
    probabilities (`fit_temperature(np.log(blend), y)`). Save the model with `ExportedModel.save(folder,
    model, labels, resize, {"members": [m.describe() ...], ...})`. Members with weight 0 are left out.
    """
    import keras

    from automl.export.layers import CropResize, ProbabilityTemperature, Temperature, WeightedAverage
    from automl.train.assemble import trained_network

    _check(members, labels)
    used = [m for m in members if m.weight > 0]
    resize = input_resize(used)
    pixels = keras.Input(shape=(resize.size, resize.size, 3), name="pixels")
    groups: dict[tuple[str, str], list[int]] = {}
    for index, member in enumerate(used):
        groups.setdefault((member.backbone.name, member.weights), []).append(index)
    probabilities: dict[int, Any] = {}
    for group, indices in enumerate(groups.values()):
        backbone, weights = used[indices[0]].backbone, used[indices[0]].weights
        model = backbone.build(weights)
        frozen = backbone.extractor(model, sorted({used[i].cut for i in indices}))
        frozen.trainable = False
        frozen.name = f"{backbone.name}_{group}_frozen"
        own = backbone.resize
        if own == resize:
            activations = frozen(pixels)
        else:
            crop = CropResize(resize.size, own.size, own.crop_fraction / resize.crop_fraction, own.resample)
            activations = frozen(crop(pixels))
        for i in indices:
            member = used[i]
            name = f"member{i}_{backbone.name}_{member.cut}"
            if isinstance(member.head, LinearHead):
                network = linear_network(member.head, name)
            else:
                network = trained_network(backbone, model, member.cut, member.head)
                network.name = name
            scores = Temperature(member.temperature, name=f"{name}_temperature")(network(activations[member.cut]))
            probabilities[i] = keras.layers.Activation("softmax", name=f"{name}_probabilities")(scores)
    ordered = [probabilities[i] for i in range(len(used))]
    if temperature == 1.0:
        mixed = WeightedAverage([m.weight for m in used], name="probabilities")(ordered)
    else:
        mixed = WeightedAverage([m.weight for m in used], name="blend")(ordered)
        mixed = ProbabilityTemperature(temperature, name="probabilities")(mixed)
    return keras.Model(pixels, mixed, name="ensemble"), resize
