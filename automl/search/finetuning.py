"""The search's fine-tuning stage: linear probe, then fine-tune (LP-FT, Kumar et al. 2022), after the selection.

Why a stage and not Tune trials: ASHA judged `top`-cut trials at epoch 2 against linear heads that had already
converged, from a zero head and the head's learning rates, and none finished. Here the chosen model's heaviest
member's backbone is fine-tuned after the first cut of the recipe's `FINETUNED_CUTS` it offers
(`automl.train.finetune`: the head starts from the probe, Adam 3e-4 with cosine decay, BatchNorm frozen, bounded by
wall time), on the cached activations, flipped views as extra rows when `search.augment` is on
(`automl.cache.views`).

The comparison is paired and held out: fold 0 of the selection's folds. The linear probe's score is LR-CV's
out-of-fold accuracy on that fold (its model never saw those photos); the fine-tuned model trains on the other
folds, starting from a probe fitted on those folds only. Both are judged by held-out accuracy (fine-tuned heads end
over-confident, so raw log-loss would favour the probe whatever its accuracy); flip test-time averaging is kept
when it gains photos on the fold. FT replaces the chosen model only when it gets more than `MARGIN_PHOTOS` photos
more right than both the probe and the chosen model (an ensemble, or a Tune finalist, is cross-validated on the
same folds, so its out-of-fold predictions on fold 0 are held out too); it is then fine-tuned again on the whole
pool for the epochs the fold run did, when the time left allows (else the fold's model is exported:
`FinetuneSummary.refit` says which), and calibrated by a temperature fitted on the fold's held-out predictions (so
the exported estimate's log-loss on that fold is optimistic; its accuracy is not, up to the TTA choice).

Time: `SearchBudget.finetune` seconds (`search.finetune_share` of `budget.time`, taken from the trials), from the
moment the stage starts; extraction of missing activations counts against it. Under `MIN_FINETUNE_S` left, the
stage is skipped and says why.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from automl.cache.views import HFLIP, ORIGINAL
from automl.runs.records import FinetuneSummary
from automl.search.budget import MIN_FINETUNE_S

if TYPE_CHECKING:
    from rich.console import Console

    from automl.backbones.base import Backbone
    from automl.data.dataset import Dataset
    from automl.recipe import Recipe, SearchSection
    from automl.search.budget import SearchBudget
    from automl.search.driver import Development
    from automl.search.features import FeatureSet, StageFeatures
    from automl.search.selection import Candidate, Choice
    from automl.train.finetune import FinetuneResult

MARGIN_PHOTOS = 1
"""FT must get more than this many more held-out photos right than the probe to replace the chosen model.
Tests raise or lower it (a documented test seam) to force either outcome."""
HELD_OUT_FOLD = 0
LEARNING_RATE = 3e-4
EPOCHS = 8
"""Adam 3e-4, 8 epochs: the best `top` setting of `benchmarks/finetune.py` on trashnet (Lite0 and Lite2)."""


@dataclass
class StageOutcome:
    """The choice to export (the fine-tuned model when it won, else the selection's) and the stage's record."""

    choice: Choice
    summary: FinetuneSummary


def finetune_stage(
    recipe: Recipe,
    dataset: Dataset,
    backbones: dict[str, Backbone],
    features: FeatureSet,
    development: Development,
    choice: Choice,
    budget: SearchBudget,
    console: Console,
    stage: Mapping[str, StageFeatures],
) -> StageOutcome:
    """Fine-tune the chosen backbone after its cut, compare with its probe on fold 0, keep the winner.

    `stage`: per backbone, the cut and views to train on (`FeaturePlan.stage`, what `automl cache build` fills)."""
    started = time.perf_counter()
    backbone = backbones[choice.members[0][0].backbone]
    probe = _probe_of(choice, backbone.name)
    features_of = stage.get(backbone.name)
    skipped = _skip_reason(recipe.search, backbone.name, features_of, probe, budget, development)
    if skipped is not None:
        console.print(f"[bold]fine-tuning[/bold] skipped: {skipped}")
        return StageOutcome(choice, FinetuneSummary(backbone=backbone.name, skipped=skipped))
    assert probe is not None and features_of is not None  # _skip_reason
    deadline = budget.finetune_deadline()
    run = _Run(recipe, dataset, backbone, features, development, probe, features_of, deadline)
    return run.compare(choice, console, started)


def _skip_reason(
    search: SearchSection,
    backbone: str,
    stage: StageFeatures | None,
    probe: Candidate | None,
    budget: SearchBudget,
    development: Development,
) -> str | None:
    if not search.finetune:
        return "search.finetune is off"
    if stage is None:
        return f"search.cuts holds no cut to fine-tune that {backbone} offers (add `top` or `half`)"
    if probe is None:
        return f"no LR-CV candidate of {backbone} among the selection's candidates"
    missing = sorted(set(development.y.tolist()) - set(development.y[development.folds != HELD_OUT_FOLD].tolist()))
    if missing:  # a class of fewer photos than folds, all in the held-out fold: nothing to train it on
        return f"classes {missing} have no photo outside held-out fold {HELD_OUT_FOLD} (too few photos)"
    if math.isfinite(budget.seconds) and budget.finetune < MIN_FINETUNE_S:
        return (
            f"{budget.finetune:.0f} s kept for it, less than {MIN_FINETUNE_S:.0f} s (search.finetune_share of "
            "budget.time is kept only when it is that much and the trials keep enough; else the trials have it)"
        )
    return None


def _probe_of(choice: Choice, backbone: str) -> Candidate | None:
    """The backbone's LR-CV candidate: the linear probe the stage starts from and compares with."""
    for candidate in choice.candidates:
        if candidate.backbone == backbone and candidate.details.get("head") == "logistic":
            return candidate
    return None


class _Run:
    """One backbone and cut: the fold run, the comparison, and the refit when FT wins."""

    def __init__(
        self,
        recipe: Recipe,
        dataset: Dataset,
        backbone: Backbone,
        features: FeatureSet,
        development: Development,
        probe: Candidate,
        stage: StageFeatures,
        deadline: float,
    ) -> None:
        from automl.cache import BottleneckCache
        from automl.paths import cache_root

        self.recipe, self.backbone, self.probe, self.cut, self.deadline = recipe, backbone, probe, stage.cut, deadline
        self.weights = recipe.search.weights
        self.x_pooled, self.y, self.sha1s = features.pool(backbone.name)
        self.development = development
        self.held_out = development.folds == HELD_OUT_FOLD
        self.views = list(stage.views)
        self.cache = BottleneckCache(cache_root(recipe.cache))
        wanted = set(self.sha1s)
        records = [r for split in ("train", "val") for r in dataset.split(split) if r.sha1 in wanted]
        extraction = self.cache.ensure(
            backbone,
            self.weights,
            [],
            records,
            entries=stage.entries(),
            progress=False,
            engine=recipe.resources.engine,
            deadline=deadline - MIN_FINETUNE_S / 2,  # stops with its parts kept: the next search goes on from them
        )
        self.extracted, self.interrupted = extraction.computed, extraction.interrupted

    def compare(self, choice: Choice, console: Console, started: float) -> StageOutcome:
        from automl.train.finetune import probe_head

        c = float(self.probe.details["C"])
        train = ~self.held_out
        head = probe_head(self.x_pooled[train], self.y[train], c=c)
        left = self.deadline - time.time()
        if self.interrupted or left < MIN_FINETUNE_S / 2:  # the activations it had to extract took the share
            done = "stopped extracting" if self.interrupted else "extracted"
            skipped = f"{left:.0f} s left after it {done} the `{self.cut}` activations (parts kept for the next search)"
            console.print(f"[bold]fine-tuning[/bold] skipped: {skipped}")
            return StageOutcome(
                choice,
                FinetuneSummary(backbone=self.backbone.name, cut=self.cut, extracted=self.extracted, skipped=skipped),
            )
        k = self.development.k
        # the fold run gets the share that leaves the refit (k/(k-1) as many rows) its turn
        fold_limit = left / (1 + k / (k - 1))
        result = self._finetune(head, self.held_out, limit=fold_limit)
        y_out = self.y[self.held_out]
        lp_correct = _correct(self.probe.oof_probabilities[self.held_out], y_out)
        chosen_correct = _correct(choice.oof_probabilities[self.held_out], y_out)
        plain = result.probabilities[ORIGINAL]
        tta = HFLIP in result.probabilities and _correct((plain + result.probabilities[HFLIP]) / 2, y_out) > _correct(
            plain, y_out
        )
        probabilities = (plain + result.probabilities[HFLIP]) / 2 if tta else plain
        ft_correct = _correct(probabilities, y_out)
        blend = _Blend(choice, self.held_out, plain, y_out)
        blend_correct = _correct(blend.probabilities, y_out)
        n = len(y_out)
        best_before = max(lp_correct, chosen_correct)
        blended = blend_correct > ft_correct and blend_correct - best_before > MARGIN_PHOTOS
        wins = blended or ft_correct - best_before > MARGIN_PHOTOS
        console.print(
            f"[bold]fine-tuning[/bold] {self.backbone.name} `{self.cut}` on fold {HELD_OUT_FOLD} ({n} photos): "
            f"probe {lp_correct / n:.4f}, chosen model {chosen_correct / n:.4f}, "
            f"LP-FT {ft_correct / n:.4f}{' with flip TTA' if tta else ''}, LP-FT + chosen {blend_correct / n:.4f} "
            f"({result.epochs_done} epochs, {result.trial.seconds:.0f} s): "
            + ("LP-FT + chosen exported" if blended else "LP-FT exported" if wins else "the selection's model kept")
        )
        refit = False
        if wins:
            from automl.search.selection import Choice

            candidate, refit = self._fine_tuned(result, y_out, tta and not blended, head_c=c, console=console)
            choice = blend.with_member(candidate) if blended else Choice([candidate], np.ones(1), y_out, folds=1)
        summary = FinetuneSummary(
            backbone=self.backbone.name,
            cut=self.cut,
            lp_accuracy=lp_correct / n,
            chosen_accuracy=chosen_correct / n,
            ft_accuracy=ft_correct / n,
            held_out=n,
            extracted=self.extracted,
            epochs=result.epochs_done,
            augment=len(self.views) > 1,
            seconds=round(time.perf_counter() - started, 1),
            exported=wins,
            refit=refit,
            tta=tta,
            blend_accuracy=blend_correct / n,
            blended=blended,
        )
        return StageOutcome(choice, summary)

    def _finetune(
        self, head, held_out: np.ndarray, *, epochs: int | None = None, limit: float | None = None
    ) -> FinetuneResult:
        """LP-FT from `head` on the pool rows not `held_out` (every view), scoring the held-out rows when any
        (in every view, for the flip test-time choice)."""
        from automl.train.finetune import FinetuneConfig, FoldData, finetune

        data = FoldData.from_cache(
            self.cache,
            self.backbone,
            self.weights,
            self.cut,
            self.sha1s,
            self.y,
            held_out,
            num_classes=self.probe.oof_probabilities.shape[1],
            views=self.views,
            held_out_views=self.views,
        )
        epochs = EPOCHS if epochs is None else max(1, epochs)
        config = FinetuneConfig(learning_rate=LEARNING_RATE, epochs=epochs, seed=self.recipe.search.seed)
        bounded = limit if limit is not None and math.isfinite(limit) else None  # no time budget: the epochs bound it
        return finetune(self.backbone, self.weights, self.cut, head, data, config, time_limit=bounded)

    def _fine_tuned(
        self,
        fold_result: FinetuneResult,
        y_out: np.ndarray,
        tta: bool,
        *,
        head_c: float,
        console: Console,
    ) -> tuple[Candidate, bool]:
        """The fine-tuned model as a candidate, calibrated on the held-out fold: refit on the whole pool when it
        fits (True), else the fold's model."""
        from automl.search.selection import Candidate
        from automl.selection.calibration import fit_temperature, views_softmax
        from automl.train.finetune import probe_head

        trained = fold_result.trial
        k = self.development.k
        needed = trained.seconds * k / (k - 1)
        refit = time.time() + needed <= self.deadline
        if refit:
            head = probe_head(self.x_pooled, self.y, c=head_c)
            # the same recipe for the fold run's epochs on every pool photo (no held-out rows left to score)
            every = np.zeros(len(self.y), dtype=bool)
            limit = self.deadline - time.time()
            trained = self._finetune(head, every, epochs=fold_result.epochs_done, limit=limit).trial
        console.print(
            "[bold]fine-tuning[/bold] exported model: "
            + ("refit on the whole pool" if refit else f"the fold model (a refit needs ~{needed:.0f} s, not left)")
        )
        # logits of each view the exported model averages (log p is z up to a constant per row: same softmax)
        views = [fold_result.probabilities[ORIGINAL], *([fold_result.probabilities[HFLIP]] if tta else [])]
        logits = np.log(np.clip(np.stack(views), 1e-12, 1.0)).astype(np.float64)
        temperature = fit_temperature(logits, y_out)  # the form the export computes: each view / T, then the mean
        candidate = Candidate(
            name=f"lp-ft/{self.backbone.name}/{self.cut}",
            backbone=self.backbone.name,
            cut=self.cut,
            head=trained,
            temperature=temperature,
            oof_probabilities=views_softmax(logits, temperature.temperature),
            details={
                "head": "softmax",
                "finetune": True,
                "learning_rate": LEARNING_RATE,
                "epochs": fold_result.epochs_done,
                "augment": len(self.views) > 1,
                "tta": tta,
                "refit": refit,
            },
            seconds=fold_result.trial.seconds,
        )
        return candidate, refit


class _Blend:
    """The selection's chosen model and LP-FT averaged half and half, as one flat ensemble: the chosen members'
    calibrated probabilities weighted by half their weights, LP-FT's (original view, temperature fitted on the
    held-out fold) by half, recalibrated by one blend temperature, all on the held-out fold."""

    def __init__(self, choice: Choice, held_out: np.ndarray, plain: np.ndarray, y_out: np.ndarray) -> None:
        from automl.selection.calibration import fit_temperature, softmax

        self.members = [
            (dataclasses.replace(c, oof_probabilities=c.oof_probabilities[held_out]), w) for c, w in choice.members
        ]
        logits = np.log(np.clip(plain, 1e-12, 1.0)).astype(np.float64)
        finetuned = softmax(logits, fit_temperature(logits, y_out).temperature)
        chosen = sum(weight * candidate.oof_probabilities for candidate, weight in self.members)
        self.probabilities = (chosen + finetuned) / 2
        self.y = y_out

    def with_member(self, finetuned: Candidate) -> Choice:
        """The blend as a Choice, `finetuned` (calibrated on the same fold) as its last member."""
        from automl.metrics import PROBABILITY_FLOOR
        from automl.search.selection import Choice
        from automl.selection.calibration import fit_temperature

        candidates = [candidate for candidate, _ in self.members] + [finetuned]
        weights = np.array([weight / 2 for _, weight in self.members] + [0.5])
        flat = Choice(candidates, weights, self.y, folds=1).oof_probabilities
        temperature = fit_temperature(np.log(np.clip(flat, PROBABILITY_FLOOR, 1.0)), self.y).temperature
        return Choice(candidates, weights, self.y, folds=1, blend_temperature=temperature)


def _correct(probabilities: np.ndarray, labels: np.ndarray) -> int:
    return int((probabilities.argmax(axis=1) == labels).sum())
