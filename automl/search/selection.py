"""The search's choice of model: candidates scored out of fold on the development pool, calibrated, ensembled.

Why not the trial with the best validation accuracy: on a few hundred validation photos most trials tie
(35-39 of ~40 at 137/138 on animals10), and the maximum over trials and epochs is an optimistic estimate.
Here train + val form one development pool split into `search.folds` folds (`automl.selection.folds`: a
function of each photo's SHA-1 and the seed), and every candidate is judged by its out-of-fold (OOF)
predictions: each photo predicted by a model that never saw it.

Candidates: logistic regression on each backbone's pooled vectors with C chosen by cross-validation
("LR-CV", `automl.selection.oof`: what Kornblith et al. 2019 fit on frozen features, and the honest
baseline), and the configurations of the best Tune trials on cut `all` (`TRIAL_FINALISTS`, one per head
type), each trained once per fold for as many epochs as its trial trained, the last epoch kept (the held-out
fold never chooses anything). Tune explores the space on the train/val split, where ~40 trials are
affordable; cross-validating all of them is not, so its finalists are raced here on equal terms with
LR-CV. Each candidate is calibrated by a temperature fitted on its OOF logits or margins
(`automl.selection.calibration`: this is what turns the SVM head's margins into probabilities).

Ranking: by OOF log-loss, a proper scoring rule. Accuracy cannot separate candidates on small pools (one
photo is 0.1-0.5 points) while log-loss sees every photo's confidence; it is also what the ensemble
optimises, so the single best and the ensemble are compared on the same scale.

Ensemble: Caruana's greedy selection with replacement over the calibrated OOF probabilities
(`automl.selection.ensemble`), kept only when a paired bootstrap over photos says it beats the best single
candidate's OOF log-loss (one-sided, `ENSEMBLE_ALPHA`), then recalibrated as a whole (averaging calibrated
members made the blend underconfident on trashnet: ECE 0.052 before). Split seeds 0-5, warm cache: the
calibrated LR-CV ensemble of Lite0/1/2 scored mean test top-1 0.979 on animals10 and 0.890 on trashnet,
against 0.970 and 0.857 for the best single LR-CV (`benchmarks/selection.py`).

Export: ONE Keras model from raw RGB photos (`automl.export.ensemble`): each member's backbone runs once
inside it, with its own crop and resize, and the members' calibrated probabilities are averaged with
their weights. LR-CV's member is its refit on the whole pool; a trial's linear head (softmax, svm) is the mean of its
k fold heads (one Dense layer: the mean of the logits), an mlp head is refit on the whole pool for the same
epochs: every label is used either way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from automl.metrics import PROBABILITY_FLOOR, expected_calibration_error, log_loss, reliability_bins, wilson_interval
from automl.selection.calibration import Temperature, fit_temperature, softmax
from automl.selection.linear import LinearHead

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.runs.records import SelectionSummary
    from automl.selection.ensemble import Comparison
    from automl.train import TrialResult

ENSEMBLE_ALPHA = 0.10
"""An ensemble is kept when at most this share of bootstrap resamples finds it no better than the best single
(one-sided). At 0.05 the LR-CV ensemble of Lite0/1/2 was rejected on all 6 animals10 split seeds (its OOF
log-loss gains -0.007..-0.012 were not better in 3-7 % of resamples) though it gained 0.9 points of mean test
top-1; at 0.10 it is kept there and on trashnet (+3.3 points): `benchmarks/selection.py`."""
POOLED = "all"
TRIAL_FINALISTS = 2
"""Tune trials cross-validated as candidates: the best complete one of each head type, best first."""


@dataclass(frozen=True)
class Pool:
    """The development pool of one backbone: pooled vectors (train then val rows) and their labels."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class Candidate:
    """One model scored out of fold: its calibrated OOF probabilities and what exporting it needs."""

    name: str
    backbone: str
    cut: str
    head: LinearHead | TrialResult
    temperature: Temperature
    oof_probabilities: np.ndarray
    """(N, classes), calibrated: softmax(OOF logits / T)."""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def scores(self, y: np.ndarray) -> dict[str, float]:
        return {
            "oof_accuracy": float((self.oof_probabilities.argmax(axis=1) == y).mean()),
            "oof_log_loss": log_loss(y, self.oof_probabilities),
        }


@dataclass
class Choice:
    """The candidates, the chosen weights over them (one per candidate, summing to 1) and the evidence."""

    candidates: list[Candidate]
    weights: np.ndarray
    y: np.ndarray
    folds: int
    comparison: Comparison | None = None
    blend_temperature: float = 1.0
    """Recalibrates an ensemble's average: softmax(log(Σ wᵢ·pᵢ) / T), fitted on the blend's OOF probabilities."""

    @property
    def members(self) -> list[tuple[Candidate, float]]:
        order = np.argsort(-self.weights, kind="stable")
        return [(self.candidates[i], float(self.weights[i])) for i in order if self.weights[i] > 0]

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def name(self) -> str:
        members = self.members
        return members[0][0].name if len(members) == 1 else "ensemble(" + "+".join(c.name for c, _ in members) + ")"

    @property
    def oof_probabilities(self) -> np.ndarray:
        blend = np.tensordot(self.weights, np.stack([c.oof_probabilities for c in self.candidates]), axes=1)
        if self.blend_temperature == 1.0:
            return blend
        return softmax(np.log(np.clip(blend, PROBABILITY_FLOOR, 1.0)), self.blend_temperature)

    def estimate(self) -> dict[str, Any]:
        """The cross-validated estimate of the chosen model: OOF accuracy with its 95 % interval, log-loss, ECE."""
        probabilities = self.oof_probabilities
        correct = int((probabilities.argmax(axis=1) == self.y).sum())
        return {
            "folds": self.folds,
            "n": len(self.y),
            "accuracy": correct / len(self.y),
            "accuracy_ci95": list(wilson_interval(correct, len(self.y))),
            "log_loss": log_loss(self.y, probabilities),
            "ece": expected_calibration_error(reliability_bins(self.y, probabilities)),
        }


def lr_cv_candidate(name: str, pool: Pool, folds: np.ndarray, num_classes: int) -> Candidate:
    """LR-CV on one backbone's pooled vectors: OOF predictions, temperature on OOF logits, refit head."""
    from automl.selection.oof import fit_logistic_cv

    started = time.perf_counter()
    fitted = fit_logistic_cv(pool.x, pool.y, folds, num_classes=num_classes)
    temperature = fit_temperature(fitted.oof_logits, pool.y)
    kernel, bias = fitted.dense_weights()
    return Candidate(
        name=f"lr-cv/{name}",
        backbone=name,
        cut=POOLED,
        head=LinearHead(kernel.astype(np.float64), bias.astype(np.float64)),
        temperature=temperature,
        oof_probabilities=softmax(fitted.oof_logits, temperature.temperature),
        details={"head": "logistic", "C": fitted.best_c},
        seconds=time.perf_counter() - started,
    )


def trial_candidate(
    name: str, trained: TrialResult, pool: Pool, folds: np.ndarray, num_classes: int, deadline: float
) -> Candidate | None:
    """A finished trial's configuration cross-validated on the pool; None when the deadline cuts it short or a
    fold's training diverged (non-finite scores: no probability to calibrate or blend)."""
    from automl.selection.linear import mean_of_heads
    from automl.train import TimeLimit, TrialData, train_trial

    started = time.perf_counter()
    config = {**trained.config, "epochs": max(1, len(trained.history))}
    _quiet_retracing()
    logits = np.zeros((len(pool.y), num_classes))
    heads: list[LinearHead] = []
    for fold in range(int(folds.max()) + 1):
        train, held_out = folds != fold, folds == fold
        if not held_out.any():
            continue
        data = TrialData(pool.x[train], pool.y[train], pool.x[held_out], pool.y[held_out], num_classes)
        result = train_trial(config, data, [TimeLimit(deadline - time.time())], keep_last=True)
        if time.time() > deadline:
            return None
        logits[held_out] = _scores(result, pool.x[held_out])
        if len(result.weights) == 2:  # softmax and svm: one Dense layer
            heads.append(LinearHead(result.weights[0].astype(np.float64), result.weights[1].astype(np.float64)))
    head: LinearHead | TrialResult
    if len(heads) == int(folds.max()) + 1:
        head = mean_of_heads(heads)
    else:  # mlp: one refit on the whole pool (its validation rows only report)
        data = TrialData(pool.x, pool.y, pool.x, pool.y, num_classes)
        head = train_trial(config, data, [TimeLimit(deadline - time.time())], keep_last=True)
        if time.time() > deadline:
            return None
    if not np.isfinite(logits).all():  # the configuration diverged on some fold (SGD at a high learning rate)
        return None
    temperature = fit_temperature(logits, pool.y)
    return Candidate(
        name=name,
        backbone=str(config["backbone"]),
        cut=POOLED,
        head=head,
        temperature=temperature,
        oof_probabilities=softmax(logits, temperature.temperature),
        details={key: config[key] for key in ("head", "optimizer", "learning_rate", "epochs") if key in config},
        seconds=time.perf_counter() - started,
    )


def _quiet_retracing() -> None:
    """k short trainings in one process each trace their own epoch function: TensorFlow's retracing warning
    (meant for a function retraced by accident) would print once per fold."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _scores(result: TrialResult, x: np.ndarray) -> np.ndarray:
    """The trained head's logits (or margins) on pooled vectors `x`."""
    import keras

    from automl.train.config import TrainConfig
    from automl.train.heads import build_network

    network = build_network(TrainConfig.from_dict(result.config), result.num_classes, result.input_shape, None)
    network.set_weights(result.weights)
    scores = np.concatenate([np.asarray(network(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)])
    keras.backend.clear_session(free_memory=False)
    return scores.astype(np.float64)


def choose(
    candidates: Sequence[Candidate],
    y: np.ndarray,
    folds: int,
    *,
    ensemble: bool = True,
    max_members: int | None = None,
) -> Choice:
    """The best single candidate by OOF log-loss, or the greedy ensemble when it beats it beyond the noise."""
    from automl.selection.ensemble import compare_to_best_single, greedy_selection

    if not candidates:
        raise ValueError("no candidate to choose from")
    ordered = sorted(candidates, key=lambda c: log_loss(y, c.oof_probabilities))
    single = np.zeros(len(ordered))
    single[0] = 1.0
    if not ensemble or len(ordered) == 1:
        return Choice(list(ordered), single, y, folds)
    probabilities = [c.oof_probabilities for c in ordered]
    selection = greedy_selection(probabilities, y, max_members=max_members)
    if np.count_nonzero(selection.weights) < 2:
        return Choice(list(ordered), single, y, folds)
    comparison = compare_to_best_single(probabilities, y, selection)
    if not comparison.wins_at(ENSEMBLE_ALPHA):
        return Choice(list(ordered), single, y, folds, comparison)
    blend = Choice(list(ordered), selection.weights, y, folds, comparison).oof_probabilities
    temperature = fit_temperature(np.log(np.clip(blend, PROBABILITY_FLOOR, 1.0)), y).temperature
    return Choice(list(ordered), selection.weights, y, folds, comparison, temperature)


def assemble_choice(choice: Choice, backbones: Mapping[str, Backbone], weights: str, labels: Sequence[str]) -> Any:
    """ONE Keras model (photo pixels at the returned resize → calibrated probabilities) for the choice, flip-averaged
    when its members were scored so (fine-tuned models whose held-out fold gained by flips): the blend temperature
    then comes after the flip average, the form the fine-tuning stage scored."""
    from automl.export.ensemble import Member, assemble_ensemble

    members = [
        Member(
            backbone=backbones[candidate.backbone],
            cut=candidate.cut,
            head=candidate.head,
            temperature=candidate.temperature.temperature,
            weight=weight,
            weights=weights,
        )
        for candidate, weight in choice.members
    ]
    if not choice.members[0][0].details.get("tta"):
        return assemble_ensemble(members, labels, temperature=choice.blend_temperature)
    from automl.train.tta import with_flip_tta

    model, resize = assemble_ensemble(members, labels)
    return with_flip_tta(model, temperature=choice.blend_temperature), resize


def selection_summary(choice: Choice, latency: tuple[float | None, float | None] = (None, None)) -> SelectionSummary:
    """summary.json's `selection`: the candidates' OOF scores, the members, the cross-validated estimate and the
    single-photo latency (ms, p50) of the export and of the best single candidate (`export.measure_latency`)."""
    from automl.runs.records import CandidateScore, CrossValidation, SelectionMember, SelectionSummary

    estimate = choice.estimate()
    return SelectionSummary(
        chosen=choice.name,
        ensemble=choice.is_ensemble,
        members=[
            SelectionMember(
                name=c.name, backbone=c.backbone, cut=c.cut, weight=w, temperature=c.temperature.temperature
            )
            for c, w in choice.members
        ],
        candidates=[
            CandidateScore(
                name=c.name, temperature=c.temperature.temperature, seconds=round(c.seconds, 2), **c.scores(choice.y)
            )
            for c in choice.candidates
        ],
        cv=CrossValidation(**{**estimate, "accuracy_ci95": tuple(estimate["accuracy_ci95"])}),
        ensemble_gain=choice.comparison.difference if choice.comparison else None,
        ensemble_p=choice.comparison.share_not_better if choice.comparison else None,
        blend_temperature=choice.blend_temperature,
        latency_ms_p50=latency[0],
        single_latency_ms_p50=latency[1],
    )
