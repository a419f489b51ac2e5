"""summary.json and metrics.json as typed records: what a search concluded, and its model's test metrics.

One name per quantity across both files: the exported trial's validation accuracy is `val_accuracy`
(metrics.json called it `val_top1` before 2026-11-30; that name is still read). Reading a file written
by an older automl fills what it lacks with None; a file this version cannot read is refused with a
`RunFolderError` naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from automl.atomic import write_atomic
from automl.data.files import read_bounded
from automl.dimensions import Value
from automl.runs.folder import RunFolderError
from automl.runs.trials import TrialCounts

StopReason = Literal["time", "trials", "target_accuracy", "search_space", "interrupted"]
Config = dict[str, Value]
"""A trial's whole configuration: its dimensions plus `epochs` and `seed`."""
MAX_RECORD_BYTES = 64 * 1024**2
"""Largest summary.json / metrics.json read (a 100-class confusion matrix is ~40 KB)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def write(self, path: Path) -> None:
        """The record as JSON at `path`, atomically."""
        write_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record in `path`; `RunFolderError` naming the file and the key when it cannot be read."""
        try:
            # bounded, regular files only: a FIFO or /dev/zero in a foreign run folder never hangs
            return cls.model_validate(json.loads(read_bounded(path, MAX_RECORD_BYTES)))
        except (OSError, ValueError) as exc:
            problem = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = f" at {'.'.join(map(str, problem['loc']))}: {problem['msg']}" if problem else f": {exc}"
            raise RunFolderError(
                f"{path}: not a readable {cls.__name__} record{where}",
                hint="it may be damaged, or written by a newer automl; `automl report` still shows the other files",
            ) from exc


class BestTrial(_Record):
    trial: str
    config: Config = Field(default_factory=dict)
    val_accuracy: float | None = None
    test_top1: float | None = None
    test_top1_ci95: tuple[float, float] | None = None
    test_top5: float | None = None


class BaselineResult(_Record):
    config: Config
    val_accuracy: float


class UnreadableFile(_Record):
    file: str
    reason: str


class CacheUse(_Record):
    """What preparing the features cost: hits are cached rows reused, misses rows computed."""

    seconds: float | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    failed: list[UnreadableFile] = Field(default_factory=list)
    repaired: list[str] = Field(default_factory=list)
    backbones: dict[str, str] = Field(default_factory=dict)
    """Each backbone's extraction: `done`, `interrupted` (at the deadline, parts kept) or `skipped` (for time);
    only `done` ones were in the search space."""


class RayCluster(_Record):
    address: str | None = None
    dashboard: str | None = None
    nodes: int = 1


class SelectionMember(_Record):
    name: str
    backbone: str
    cut: str
    weight: float
    temperature: float


class CandidateScore(_Record):
    name: str
    oof_accuracy: float
    oof_log_loss: float
    temperature: float
    seconds: float | None = None


class CrossValidation(_Record):
    """The chosen model's cross-validated estimate: out-of-fold accuracy with its 95 % interval."""

    folds: int
    n: int
    accuracy: float
    accuracy_ci95: tuple[float, float]
    log_loss: float
    ece: float


class SelectionSummary(_Record):
    """How the exported model was chosen (`automl.search.selection`): candidates, members, the ensemble's test."""

    chosen: str
    ensemble: bool
    members: list[SelectionMember] = Field(default_factory=list)
    candidates: list[CandidateScore] = Field(default_factory=list)
    cv: CrossValidation | None = None
    ensemble_gain: float | None = None
    """OOF log-loss of the greedy ensemble minus the best single's (negative: the ensemble is better)."""
    ensemble_p: float | None = None
    """Share of bootstrap resamples where the ensemble is not better (one-sided p)."""
    blend_temperature: float = 1.0
    """The temperature recalibrating a kept ensemble's average (1: a single model)."""
    latency_ms_p50: float | None = None
    """Single-photo latency of the exported model, median of `LATENCY_RUNS` calls on this machine (ms)."""
    single_latency_ms_p50: float | None = None
    """The same for the best single candidate, measured when the export is an ensemble: what the ensemble costs."""


class FinetunedBackbone(_Record):
    """One backbone's LP-FT run in the fine-tuning stage, scored on the held-out fold."""

    backbone: str
    cut: str
    lp_accuracy: float
    """Its linear probe's (LR-CV's) out-of-fold accuracy on the held-out fold."""
    ft_accuracy: float
    """LP-FT's accuracy on the same fold (with flip test-time averaging when `tta`)."""
    tta: bool = False
    epochs: int = 0
    seconds: float = 0.0
    """Training on the folds outside the held-out one (extraction not included)."""
    extracted: int = 0
    """Photos whose activations (cut, views) the stage computed for it."""
    exported: bool = False
    refit: bool = False
    """True: exported after fine-tuning again on the whole pool; False: the fold's model was exported (or none)."""


class StageContender(_Record):
    """A model the fine-tuning stage compared on the held-out fold (`automl.search.finetuning.CONTENDERS`)."""

    name: str
    accuracy: float
    log_loss: float | None = None
    """Of the calibrated probabilities (temperatures fitted on this fold: optimistic alike for every contender)."""


class FinetuneSummary(_Record):
    """The fine-tuning stage (`automl.search.finetuning`): the chosen model against LP-FT of one or more
    backbones, alone, averaged, and blended with it, on one held-out fold."""

    backbones: list[FinetunedBackbone] = Field(default_factory=list)
    """The backbones fine-tuned, best probe first."""
    contenders: list[StageContender] = Field(default_factory=list)
    chosen_accuracy: float | None = None
    """The selection's chosen model (maybe an ensemble) on the same fold, out of fold: what LP-FT must beat."""
    held_out: int = 0
    """Photos of the held-out fold."""
    extracted: int = 0
    """Photos whose activations (cut, views) the stage computed, all backbones together: 0 after
    `automl cache build` or a search before."""
    augment: bool = False
    seconds: float = 0.0
    exported: str | None = None
    """The contender exported in place of the chosen model, or None (the selection's model kept)."""
    stopped: str | None = None
    """Why fewer backbones than the recipe's were fine-tuned (time), or None."""
    skipped: str | None = None
    """Why the stage did not run (no cut to fine-tune, no time), or None."""

    @model_validator(mode="before")
    @classmethod
    def _one_backbone_form(cls, data: object) -> object:
        """summary.json before 2026-11-30 described one backbone in flat keys: read it as one entry."""
        if not isinstance(data, dict) or "backbones" in data or "backbone" not in data:
            return data
        old = dict(data)
        shared = set(cls.model_fields) - {"exported"}  # keys of both forms: kept at the top as they were
        flat = {
            key: old.get(key) if key in shared else old.pop(key, None)
            for key in (*FinetunedBackbone.model_fields, "blend_accuracy", "blended")
        }
        # the old `seconds` timed the whole stage, extraction included: not the one backbone's training
        one = {key: value for key, value in flat.items() if key in set(FinetunedBackbone.model_fields) - {"seconds"}}
        lp_ft = f"LP-FT {flat['backbone']}"  # the names `automl.search.finetuning` gives its contenders
        blend = "chosen model + LP-FT averaged"  # (the average of one model: the old blend)
        if flat["exported"]:
            old["exported"] = blend if flat["blended"] else lp_ft
        if flat["backbone"] and flat["lp_accuracy"] is not None and flat["ft_accuracy"] is not None:
            given = {key: value for key, value in one.items() if value is not None}
            old["backbones"] = [{**given, "exported": bool(flat["exported"])}]
        scored = (
            ("chosen model", old.get("chosen_accuracy")),
            (lp_ft, flat["ft_accuracy"]),
            (blend, flat["blend_accuracy"]),
        )
        old["contenders"] = [{"name": name, "accuracy": accuracy} for name, accuracy in scored if accuracy is not None]
        return old


class Summary(_Record):
    """summary.json, also what `automl search --json` prints (README: "The summary")."""

    run_dir: str | None = None
    recipe: str | None = None
    stop_reason: StopReason | None = None
    wall_seconds: float | None = None
    budget_seconds: float | None = None
    trials: TrialCounts = Field(default_factory=TrialCounts)
    best: BestTrial | None = None
    baseline: BaselineResult | None = None
    feature_seconds: float | None = None
    cache: CacheUse | None = None
    phases: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase of the search, in order (`ray_start`, `features`, `baseline`, `trials`, ...)."""
    model: str | None = None
    ray: RayCluster | None = None
    machine: dict[str, JsonValue] | None = None
    """`automl.machine.describe()` of the machine that ran the search, when recorded."""
    selection: SelectionSummary | None = None
    finetune: FinetuneSummary | None = None
    provisional: bool = False
    """True while the search runs: the model in the run folder is the best so far, not the final one."""
    first_model_seconds: float | None = None
    """Seconds from the start to the first model in the run folder (LR-CV on the cheapest backbone)."""


class TestMetrics(_Record):
    """metrics.json: the exported model on the test split (`automl.evaluate.evaluate_run`).

    The headline numbers are typed here; every other key `automl.metrics.classification_metrics` and
    the runtime checks write (per_class, confusion, runtimes, ...) is kept as it is (`model_extra`).
    """

    model_config = ConfigDict(frozen=True, extra="allow")
    __test__ = False  # not a pytest class

    split: str = "test"
    n: int = 0
    top1: float | None = None
    top5: float | None = None
    top1_ci95: tuple[float, float] | None = None
    val_accuracy: float | None = Field(None, validation_alias=AliasChoices("val_accuracy", "val_top1"))
    """The exported trial's validation accuracy (`val_top1` in runs written before 2026-11-30)."""
    best_trial: str | None = None
