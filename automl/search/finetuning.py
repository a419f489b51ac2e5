"""The search's fine-tuning stage: linear probe, then fine-tune (LP-FT, Kumar et al. 2022), after the selection.

Why a stage and not Tune trials: ASHA judged `top`-cut trials at epoch 2 against linear heads that had already
converged, from a zero head and the head's learning rates, and none finished. Here the backbones are fine-tuned
one after the other, best linear probe (LR-CV's out-of-fold log-loss) first, up to `MAX_BACKBONES` and as long as
the time left holds one more, each after the first cut of the recipe's `FINETUNED_CUTS` it offers
(`automl.train.finetune`: the head starts from the probe, Adam 3e-4 with cosine decay, BatchNorm frozen, bounded by
wall time), on the cached activations, flipped views as extra rows when `search.augment` is on
(`automl.cache.views`).

The comparison is paired and held out: fold 0 of the selection's folds. The probes and the chosen model are scored
by their out-of-fold predictions on that fold (their models never saw those photos); each fine-tuned model trains
on the other folds, starting from a probe fitted on those folds only. The contenders (`CHOSEN`, `ALONE`, `AVERAGED`,
`BLENDED`): the chosen model, each LP-FT alone, the LP-FT models averaged, and that average blended half and half
with the chosen model.
They are judged by held-out accuracy (fine-tuned heads end over-confident, so raw log-loss would favour the probe
whatever its accuracy); flip test-time averaging is kept when it gains photos on the fold. A contender replaces
the chosen model only when it gets more than `MARGIN_PHOTOS` photos more right than both the chosen model and
every probe; the most accurate such contender wins, ties to the one with fewer models. Its fine-tuned members are
then fine-tuned again on the whole pool for the epochs their fold run did, as the time left allows (else the
fold's model is exported: `FinetunedBackbone.refit` says which), and calibrated by temperatures fitted on the
fold's held-out predictions. The exported estimate (`Choice.estimate()` over fold 0, the summary's
`val_accuracy`) is then optimistic: the winner is the best of up to six contenders on that fold, with its TTA and
temperatures fitted there; the margin asks for more than noise, and the test split stays the unbiased check.

Measured by the search on trashnet (15 minutes, cold, seed 0; fold 0 of 5, 395 photos; `benchmarks/RESULTS.md`):
chosen ensemble 0.891; LP-FT `top` + flips Lite2 0.906, Lite1 0.891, Lite0 0.886; the three averaged 0.909,
exported (test top-1 0.902, the chosen ensemble's 0.873): one fine-tuned backbone clears the chosen ensemble by six
photos, three averaged by seven, with a lower log-loss (0.259 against 0.298).

Time: from the moment the stage starts to `SearchBudget.finetune_deadline()`: the share of `budget.time` kept for
it and whatever the trials left (a search whose trials budget ended early fine-tunes more backbones); extraction of
missing activations counts against it, and never spends the refits the backbones before may need. A backbone after
the first is started only when its own fold run and refit and the refits of every backbone before it fit in the
time left (paced by the backbone before it). Under `MIN_FINETUNE_S` left, the stage is skipped and says why.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from automl.cache.views import HFLIP, ORIGINAL
from automl.metrics import PROBABILITY_FLOOR, log_loss
from automl.runs.records import FinetunedBackbone, FinetuneSummary, StageContender
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
    from automl.selection.calibration import Temperature
    from automl.train.finetune import FinetuneResult, HeadWeights

MARGIN_PHOTOS = 1
"""A contender must get more than this many more held-out photos right than the chosen model and the best probe to
replace the chosen model. Tests raise or lower it (a documented test seam) to force either outcome."""
HELD_OUT_FOLD = 0
LEARNING_RATE = 3e-4
EPOCHS = 8
"""Adam 3e-4, 8 epochs: the best `top` setting of `benchmarks/finetune.py` on trashnet (Lite0 and Lite2)."""
MAX_BACKBONES = 3
"""Most backbones fine-tuned: the quick start's three; trashnet's fold 0 gained from their average (module doc)."""
CHOSEN, ALONE, AVERAGED, BLENDED = "chosen model", "LP-FT", "LP-FT averaged", "chosen model + LP-FT averaged"
"""The contenders' names, in order of preference on a tie (fewer models first); ALONE is followed by the backbone."""


@dataclass
class StageOutcome:
    """The choice to export (a fine-tuned contender when it won, else the selection's) and the stage's record."""

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
    """Fine-tune the best-probed backbones after their cut, compare the contenders on fold 0, keep the winner.

    `stage`: per backbone, the cut and views to train on (`FeaturePlan.stage`, what `automl cache build` fills)."""
    started = time.perf_counter()
    probes = _ranked_probes(choice, stage)
    skipped = _skip_reason(recipe.search, choice, stage, probes, budget, development)
    if skipped is not None:
        console.print(f"[bold]fine-tuning[/bold] skipped: {skipped}")
        return StageOutcome(choice, FinetuneSummary(skipped=skipped))
    deadline = budget.finetune_deadline()
    runs: list[_Run] = []
    stopped: str | None = None
    extracted = 0
    for probe in probes[:MAX_BACKBONES]:
        backbone = backbones[probe.backbone]
        stopped = _no_time_for(backbone, runs, deadline, development.k)
        if stopped is not None:
            break
        pending = sum(r.refit_seconds for r in runs)  # the refits the runs before may need: never spent here
        run = _Run(recipe, dataset, backbone, features, development, probe, stage[backbone.name], deadline, pending)
        extracted += run.extracted
        stopped = run.fine_tune()
        if stopped is not None:
            break
        runs.append(run)
        console.print(f"[bold]fine-tuning[/bold] {run.describe()}")
    if stopped is not None:
        console.print(f"[bold]fine-tuning[/bold] stopped: {stopped}")
    if not runs:
        return StageOutcome(choice, FinetuneSummary(extracted=extracted, skipped=stopped))
    contest = _Contest(choice, runs, development)
    winner = contest.winner()
    console.print(f"[bold]fine-tuning[/bold] on fold {HELD_OUT_FOLD} ({contest.n} photos): {contest.describe(winner)}")
    exported = choice if winner is None else contest.exported(winner, console)
    summary = FinetuneSummary(
        backbones=[run.record() for run in runs],
        contenders=contest.records(),
        chosen_accuracy=contest.accuracy(CHOSEN),
        held_out=contest.n,
        extracted=extracted,
        augment=len(runs[0].views) > 1,
        seconds=round(time.perf_counter() - started, 1),
        exported=winner,
        stopped=stopped,
    )
    return StageOutcome(exported, summary)


def _ranked_probes(choice: Choice, stage: Mapping[str, StageFeatures]) -> list[Candidate]:
    """Each backbone's LR-CV candidate (the linear probe LP-FT starts from) that has a cut to fine-tune, lowest
    out-of-fold log-loss first."""
    probes = [c for c in _probes(choice) if c.backbone in stage]
    return sorted(probes, key=lambda c: log_loss(choice.y, c.oof_probabilities))


def _probes(choice: Choice) -> list[Candidate]:
    """The selection's LR-CV candidates: one linear probe per backbone."""
    return [c for c in choice.candidates if c.details.get("head") == "logistic"]


def _skip_reason(
    search: SearchSection,
    choice: Choice,
    stage: Mapping[str, StageFeatures],
    probes: Sequence[Candidate],
    budget: SearchBudget,
    development: Development,
) -> str | None:
    if not search.finetune:
        return "search.finetune is off"
    backbones = sorted({c.backbone for c in choice.candidates})
    if not any(name in stage for name in backbones):
        return f"search.cuts holds no cut to fine-tune that {', '.join(backbones)} offer (add `top` or `half`)"
    if not probes:
        return "no LR-CV candidate among the selection's candidates"
    missing = sorted(set(development.y.tolist()) - set(development.y[development.folds != HELD_OUT_FOLD].tolist()))
    if missing:  # a class of fewer photos than folds, all in the held-out fold: nothing to train it on
        return f"classes {missing} have no photo outside held-out fold {HELD_OUT_FOLD} (too few photos)"
    if math.isfinite(budget.seconds) and budget.finetune_deadline() - time.time() < MIN_FINETUNE_S:
        return (
            f"{budget.finetune_deadline() - time.time():.0f} s left for it, less than {MIN_FINETUNE_S:.0f} s "
            "(search.finetune_share of budget.time, plus what the trials leave)"
        )
    return None


def _no_time_for(backbone: Backbone, runs: Sequence[_Run], deadline: float, k: int) -> str | None:
    """Why `backbone` cannot start now, or None: after the first, a backbone starts only when its own fold run and
    refit (paced by the last run, scaled by input pixels) and the refits of the runs before fit before `deadline`
    (its extraction, when the cache lacks its activations, is bounded apart: `_Run`)."""
    if not runs or not math.isfinite(deadline):
        return None
    last = runs[-1]
    pace = last.fold_seconds * (backbone.input_size / last.backbone.input_size) ** 2
    needed = pace * (1 + k / (k - 1)) + sum(run.refit_seconds for run in runs)
    left = deadline - time.time()
    if needed > left:
        return f"{backbone.name} needs ~{needed:.0f} s with the refits before it, {left:.0f} s left"
    return None


class _Run:
    """One backbone and cut: its activations, the fold run from its probe, and the refit when it is exported."""

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
        pending: float,
    ) -> None:
        """Extracts the missing activations (until `pending` seconds of refits and half the stage's minimum before
        `deadline`)."""
        from automl.cache import BottleneckCache
        from automl.paths import cache_root

        self.recipe, self.backbone, self.probe, self.cut = recipe, backbone, probe, stage.cut
        self.deadline, self.pending = deadline, pending
        self.weights = recipe.search.weights
        self.x_pooled, self.y, self.sha1s = features.pool(backbone.name)
        self.k = development.k
        self.held_out = development.folds == HELD_OUT_FOLD
        self.views = list(stage.views)
        self.cache = BottleneckCache(cache_root(recipe.cache))
        self.c = float(probe.details["C"])
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
            deadline=deadline - pending - MIN_FINETUNE_S / 2,  # stops with its parts kept: the next search goes on
        )
        self.extracted, self.interrupted = extraction.computed, extraction.interrupted
        self.result: FinetuneResult | None = None
        self.temperatures: dict[bool, Temperature] = {}
        self.tta = False
        self.exported = False
        self.refit = False

    @property
    def fold_seconds(self) -> float:
        return self.result.trial.seconds if self.result is not None else 0.0

    @property
    def refit_seconds(self) -> float:
        """What fine-tuning again on the whole pool takes: the fold run's time for k/(k-1) as many rows."""
        return self.fold_seconds * self.k / (self.k - 1)

    def fine_tune(self) -> str | None:
        """The fold run, in the time left after the pending refits; why it did not run, or None."""
        from automl.train.finetune import probe_head

        left = self.deadline - time.time() - self.pending
        if self.interrupted or left < MIN_FINETUNE_S / 2:  # the activations it had to extract took the time
            done = "stopped extracting" if self.interrupted else "extracted"
            return (
                f"{left:.0f} s left after it {done} {self.backbone.name}'s `{self.cut}` activations "
                "(parts kept for the next search)"
            )
        train = ~self.held_out
        head = probe_head(self.x_pooled[train], self.y[train], c=self.c)
        # the fold run gets the share that leaves its refit (k/(k-1) as many rows) its turn
        self.result = self._finetune(head, self.held_out, limit=left / (1 + self.k / (self.k - 1)))
        y_out = self.y[self.held_out]
        self.tta = len(self.views) > 1 and _correct(self.calibrated(tta=True), y_out) > _correct(
            self.calibrated(tta=False), y_out
        )
        return None

    def temperature(self, *, tta: bool) -> Temperature:
        """Fitted on the fold's held-out predictions in the form exported (each view / T, then their mean)."""
        from automl.selection.calibration import fit_temperature

        if tta not in self.temperatures:
            self.temperatures[tta] = fit_temperature(self.view_logits(tta=tta), self.y[self.held_out])
        return self.temperatures[tta]

    def calibrated(self, *, tta: bool) -> np.ndarray:
        """The fold run's held-out probabilities as exported: each view's logits over `temperature`, then the mean
        over the views (`tta`: original and flipped; else the original only)."""
        from automl.selection.calibration import views_softmax

        return views_softmax(self.view_logits(tta=tta), self.temperature(tta=tta).temperature)

    def view_logits(self, *, tta: bool) -> np.ndarray:
        """(views, held-out rows, classes): log p of each view the exported model averages (log p is z up to a
        constant per row, so the softmax of it at any temperature is the model's)."""
        assert self.result is not None and (not tta or HFLIP in self.result.probabilities), "flip TTA without flips"
        views = [self.result.probabilities[ORIGINAL], *([self.result.probabilities[HFLIP]] if tta else [])]
        return np.log(np.clip(np.stack(views), PROBABILITY_FLOOR, 1.0)).astype(np.float64)

    def describe(self) -> str:
        done = self.record()
        return (
            f"{done.backbone} `{done.cut}` on fold {HELD_OUT_FOLD}: probe {done.lp_accuracy:.4f}, LP-FT "
            f"{done.ft_accuracy:.4f}{' with flip TTA' if done.tta else ''} ({done.epochs} epochs, {done.seconds:.0f} s)"
        )

    def record(self) -> FinetunedBackbone:
        assert self.result is not None
        y_out = self.y[self.held_out]
        n = len(y_out)
        return FinetunedBackbone(
            backbone=self.backbone.name,
            cut=self.cut,
            lp_accuracy=_correct(self.probe.oof_probabilities[self.held_out], y_out) / n,
            ft_accuracy=_correct(self.calibrated(tta=self.tta), y_out) / n,
            tta=self.tta,
            epochs=self.result.epochs_done,
            seconds=round(self.result.trial.seconds, 1),
            extracted=self.extracted,
            exported=self.exported,
            refit=self.refit,
        )

    def candidate(self, *, tta: bool, console: Console) -> Candidate:
        """The fine-tuned model as a candidate calibrated on the held-out fold (in the form exported: each view
        / T, then their mean): refit on the whole pool when it fits before the deadline, else the fold's model."""
        from automl.search.selection import Candidate
        from automl.train.finetune import probe_head

        assert self.result is not None
        trained = self.result.trial
        self.refit = time.time() + self.refit_seconds <= self.deadline
        self.exported = True
        if self.refit:
            head = probe_head(self.x_pooled, self.y, c=self.c)
            # the same recipe for the fold run's epochs on every pool photo (no held-out rows left to score)
            every = np.zeros(len(self.y), dtype=bool)
            limit = self.deadline - time.time()
            trained = self._finetune(head, every, epochs=self.result.epochs_done, limit=limit).trial
        console.print(
            f"[bold]fine-tuning[/bold] exported {self.backbone.name}: "
            + (
                "refit on the whole pool"
                if self.refit
                else f"the fold model (a refit needs ~{self.refit_seconds:.0f} s)"
            )
        )
        return Candidate(
            name=f"lp-ft/{self.backbone.name}/{self.cut}",
            backbone=self.backbone.name,
            cut=self.cut,
            head=trained,
            temperature=self.temperature(tta=tta),
            oof_probabilities=self.calibrated(tta=tta),
            details={
                "head": "softmax",
                "finetune": True,
                "learning_rate": LEARNING_RATE,
                "epochs": self.result.epochs_done,
                "augment": len(self.views) > 1,
                "tta": tta,
                "refit": self.refit,
            },
            seconds=self.result.trial.seconds,
        )

    def _finetune(
        self, head: HeadWeights, held_out: np.ndarray, *, epochs: int | None = None, limit: float | None = None
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


class _Contest:
    """The contenders' held-out predictions on fold 0, the winner, and the winner as a `Choice` to export.

    Every fine-tuned model enters calibrated (a temperature fitted on the fold) so that averages weigh them
    alike; the average of the LP-FT models takes flip averaging when it gains photos (all members then run on
    both views: the export wraps the whole model, its blend temperature after the flip average, so the exported
    form and its estimate agree exactly); the blend with the chosen model uses original views (the chosen model's
    members were never scored on flipped photos). Both are recalibrated by one temperature, like a selection
    ensemble."""

    def __init__(self, choice: Choice, runs: Sequence[_Run], development: Development) -> None:
        self.choice, self.runs = choice, list(runs)
        self.held_out = development.folds == HELD_OUT_FOLD
        self.y = development.y[self.held_out]
        self.n = len(self.y)

        self.probabilities: dict[str, np.ndarray] = {CHOSEN: choice.oof_probabilities[self.held_out]}
        for run in runs:
            self.probabilities[f"{ALONE} {run.backbone.name}"] = run.calibrated(tta=run.tta)
        plain = np.mean([run.calibrated(tta=False) for run in runs], axis=0)
        average = plain
        self.averaged_tta = False
        if all(len(run.views) > 1 for run in runs):
            flipped = np.mean([run.calibrated(tta=True) for run in runs], axis=0)
            self.averaged_tta = _correct(flipped, self.y) > _correct(plain, self.y)
            average = flipped if self.averaged_tta else plain
        self.temperatures: dict[str, float] = {}
        if len(runs) > 1:
            self.probabilities[AVERAGED] = self._recalibrated(AVERAGED, average)
        # the chosen members' weighted sum without their blend temperature: the export flattens them into one blend
        flat = np.tensordot(choice.weights, np.stack([c.oof_probabilities for c in choice.candidates]), axes=1)
        self.probabilities[BLENDED] = self._recalibrated(BLENDED, (flat[self.held_out] + plain) / 2)
        best_probe = max(_correct(c.oof_probabilities[self.held_out], self.y) for c in _probes(choice))
        self.bar = max(_correct(self.probabilities[CHOSEN], self.y), best_probe) + MARGIN_PHOTOS

    def _recalibrated(self, name: str, blend: np.ndarray) -> np.ndarray:
        """softmax(log blend / T), T fitted on the fold: averaging calibrated models leaves them underconfident
        (trashnet: ECE 0.057 for the three LP-FT models averaged). The export applies T after flip averaging."""
        from automl.selection.calibration import fit_temperature, softmax

        log_blend = np.log(np.clip(blend, PROBABILITY_FLOOR, 1.0))
        self.temperatures[name] = fit_temperature(log_blend, self.y).temperature
        return softmax(log_blend, self.temperatures[name])

    def accuracy(self, name: str) -> float:
        return _correct(self.probabilities[name], self.y) / self.n

    def winner(self) -> str | None:
        return _winner({name: _correct(p, self.y) for name, p in self.probabilities.items()}, self.bar)

    def describe(self, winner: str | None) -> str:
        scores = ", ".join(f"{name} {self.accuracy(name):.4f}" for name in self.probabilities)
        return f"{scores}: " + (f"{winner} exported" if winner else "the selection's model kept")

    def records(self) -> list[StageContender]:
        return [
            StageContender(name=name, accuracy=self.accuracy(name), log_loss=log_loss(self.y, probabilities))
            for name, probabilities in self.probabilities.items()
        ]

    def exported(self, winner: str, console: Console) -> Choice:
        """The winner as a Choice over the held-out fold (its estimate is the fold's), fine-tuned members refit."""
        from automl.search.selection import Choice

        alone = {f"{ALONE} {run.backbone.name}": run for run in self.runs}
        if winner in alone:
            run = alone[winner]
            return Choice([run.candidate(tta=run.tta, console=console)], np.ones(1), self.y, folds=1)
        tta = winner == AVERAGED and self.averaged_tta
        finetuned = [run.candidate(tta=tta, console=console) for run in self.runs]
        share = np.full(len(finetuned), 1 / len(finetuned))
        if winner == AVERAGED:
            return Choice(finetuned, share, self.y, folds=1, blend_temperature=self.temperatures[AVERAGED])
        chosen = [
            (dataclasses.replace(c, oof_probabilities=c.oof_probabilities[self.held_out]), w)
            for c, w in self.choice.members
        ]
        candidates = [c for c, _ in chosen] + finetuned
        weights = np.concatenate([[w / 2 for _, w in chosen], share / 2])
        return Choice(candidates, weights, self.y, folds=1, blend_temperature=self.temperatures[BLENDED])


def _winner(correct: Mapping[str, int], bar: int) -> str | None:
    """The contender (after the first, the chosen model) with the most photos right among those above `bar`, ties
    to the earlier (contenders come in order of preference: fewer models first); None when none is above it."""
    order = list(correct)
    cleared = [name for name in order[1:] if correct[name] > bar]
    return max(cleared, key=lambda name: (correct[name], -order.index(name)), default=None)


def _correct(probabilities: np.ndarray, labels: np.ndarray) -> int:
    return int((probabilities.argmax(axis=1) == labels).sum())
