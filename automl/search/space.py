"""The search space of a recipe, as an Optuna define-by-run function, and the sampler that explores it.

The dimensions are declared in `automl.dimensions`. The space is conditional: the cut points offered
depend on the backbone chosen (a backbone's own cut points ∩ the recipe's `cuts`), the head's own
dimensions exist only for that head (`mlp_hidden` and `dropout` for `mlp`, `svm_c` for `svm`) and the
optimizer's only for that optimizer (`epsilon` for Adam, `momentum` for SGD). A dimension with one
value is fixed: it is returned as a constant, never sampled, so it costs the sampler nothing.

Samplers: `tpe` (default) and `random` sample continuous ranges directly. `grid` tries every distinct
configuration once; since a grid needs finite dimensions, each continuous range that is not fixed is
discretised into `GRID_POINTS` values: both ends and the points between them, spaced evenly on a log
scale when the range is `log` (1e-4..1e-1 gives 1e-4, 3.2e-3, 1e-1) and linearly otherwise. The grid is
walked by Optuna's `BruteForceSampler`, which understands conditional spaces (Optuna's `GridSampler`
takes the Cartesian product of every parameter, so conditional ones would repeat configurations).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import optuna

from automl.dimensions import DIMENSIONS
from automl.errors import RecipeError

if TYPE_CHECKING:
    from automl.recipe import FloatRange, SearchSection

GRID_POINTS = 3
"""Values per continuous range in a grid search (ends included)."""

Config = dict[str, Any]


@dataclass(frozen=True)
class SearchSpace:
    """The recipe's search dimensions, with the cuts each backbone can offer resolved up front."""

    search: SearchSection
    cuts_by_backbone: Mapping[str, tuple[str, ...]]

    @property
    def grid(self) -> bool:
        return self.search.sampler == "grid"

    def only(self, backbones: Sequence[str]) -> SearchSpace:
        """This space on `backbones` alone (those whose features a search could extract in its budget)."""
        kept = [name for name in self.search.backbones if name in backbones]
        search = self.search.model_copy(update={"backbones": kept})
        return SearchSpace(search=search, cuts_by_backbone={name: self.cuts_by_backbone[name] for name in kept})

    def __call__(self, trial: optuna.Trial) -> Config:
        """Define-by-run: suggest the varying dimensions on `trial`; return the whole configuration.

        The dimensions are `automl.dimensions.DIMENSIONS`, in their order, each when its condition holds;
        the cuts are those the chosen backbone offers.
        """
        config: Config = {}
        for dimension in DIMENSIONS:
            if not dimension.applies(config):
                continue
            if dimension.name == "cut":
                backbone = config["backbone"]
                self._choose(trial, config, "cut", self.cuts_by_backbone[backbone], name=self._cut_param(backbone))
            elif dimension.kind == "choice":
                self._choose(trial, config, dimension.name, getattr(self.search, dimension.recipe_field))
            else:
                self._range(trial, config, dimension.name, getattr(self.search, dimension.recipe_field))
        config["epochs"] = self.search.epochs
        config["seed"] = self.search.seed
        return config

    def _cut_param(self, backbone: str) -> str:
        """One Optuna parameter `cut` when every backbone offers the same cuts, else one per backbone.

        Optuna refuses a categorical parameter whose choices change between trials, so differing cut
        sets need their own names (`cut@efficientnet_lite0`); the configuration always says `cut`.
        """
        if len(set(self.cuts_by_backbone.values())) == 1:
            return "cut"
        return f"cut@{backbone}"

    @staticmethod
    def _choose(trial: optuna.Trial, config: Config, key: str, values: Sequence[Any], name: str | None = None) -> Any:
        value = values[0] if len(values) == 1 else trial.suggest_categorical(name or key, list(values))
        config[key] = value
        return value

    def _range(self, trial: optuna.Trial, config: Config, key: str, bounds: FloatRange) -> None:
        if bounds.fixed:
            config[key] = bounds.low
        elif self.grid:
            config[key] = trial.suggest_categorical(key, grid_values(bounds))
        else:
            config[key] = trial.suggest_float(key, bounds.low, bounds.high, log=bounds.log)

    def sampler(self) -> optuna.samplers.BaseSampler:
        """The recipe's Optuna sampler, seeded with `search.seed`."""
        seed = self.search.seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.search.sampler == "random":
                return optuna.samplers.RandomSampler(seed=seed)
            if self.grid:
                return GridSampler(seed=seed)
            # multivariate + group model the conditional dimensions jointly; constant_liar keeps
            # concurrent trials from being proposed the same point.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)

    def configurations(self) -> list[Config]:
        """Every distinct configuration of a grid search, in the order a depth-first walk finds them."""
        if not self.grid:
            raise ValueError("only a grid has a finite list of configurations")
        return [self(cast("optuna.Trial", trial)) for trial in _walk_choices()]


def grid_values(bounds: FloatRange) -> list[float]:
    """`GRID_POINTS` values covering a continuous range, ends included (one value when it is fixed)."""
    if bounds.fixed:
        return [bounds.low]
    steps = GRID_POINTS - 1
    if bounds.log:
        low, high = math.log10(bounds.low), math.log10(bounds.high)
        return [float(f"{10 ** (low + (high - low) * i / steps):.3g}") for i in range(GRID_POINTS)]
    return [float(f"{bounds.low + (bounds.high - bounds.low) * i / steps:.6g}") for i in range(GRID_POINTS)]


def offered_cuts(search: SearchSection, cut_points: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Per backbone, the recipe's cuts it offers (given each backbone's own cut point names).

    A backbone offering none of the recipe's cuts is an error naming both lists, not a silent drop.
    """
    cuts_by_backbone: dict[str, tuple[str, ...]] = {}
    for backbone in search.backbones:
        offered = set(cut_points[backbone])
        cuts = tuple(cut for cut in search.cuts if cut in offered)
        if not cuts:
            raise RecipeError(
                f"search.cuts: backbone {backbone} offers none of {search.cuts}",
                hint=f"it offers {sorted(offered)}; add one of them to search.cuts",
            )
        cuts_by_backbone[backbone] = cuts
    return cuts_by_backbone


FINETUNED_CUTS = ("top", "half")
"""Cuts the fine-tuning stage trains from cached activations (`automl.search.finetuning`)."""


def finetune_cuts(search: SearchSection) -> list[str]:
    """The recipe's cuts the fine-tuning stage takes over from Tune (none when `search.finetune` is off)."""
    return [cut for cut in search.cuts if cut in FINETUNED_CUTS] if search.finetune else []


def stage_cut(search: SearchSection, cut_points: Iterable[str]) -> str | None:
    """The cut the fine-tuning stage trains after on a backbone with `cut_points`: the first of the recipe's
    `FINETUNED_CUTS` it offers, None when it offers none or the stage is off."""
    offered = set(cut_points)
    return next((cut for cut in finetune_cuts(search) if cut in offered), None)


def build_space(search: SearchSection, cut_points: Mapping[str, Iterable[str]]) -> SearchSpace:
    """The space for the recipe's `search` section, given each backbone's own cut point names.

    With the fine-tuning stage on, Tune leaves it the cuts it fine-tunes (ASHA would judge their trials at
    epoch 2 against converged linear heads): Tune explores the other cuts, `all` when none is left.
    """
    cuts_by_backbone = offered_cuts(search, cut_points)
    taken = finetune_cuts(search)
    if taken:
        cuts_by_backbone = {
            name: tuple(cut for cut in cuts if cut not in taken) or ("all",) for name, cuts in cuts_by_backbone.items()
        }
    return SearchSpace(search=search, cuts_by_backbone=cuts_by_backbone)


class GridSampler(optuna.samplers.BruteForceSampler):
    """Optuna's `BruteForceSampler`, minus its end-of-grid `study.stop()`.

    `study.stop()` only works inside `study.optimize`, which Ray Tune does not use (it asks and tells);
    the search stops at the end of the grid by its trial count instead (`len(configurations())`).
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def _walk_choices() -> Iterable[_ChoiceWalker]:
    """Trial stand-ins that, run through a define-by-run function, take every path of its choices once."""
    path: list[int] = []
    while True:
        walker = _ChoiceWalker(path)
        yield walker
        # Odometer over the choices actually met: advance the deepest one that has a next value.
        path = walker.taken
        while path and path[-1] + 1 >= walker.widths[len(path) - 1]:
            path.pop()
        if not path:
            return
        path[-1] += 1


class _ChoiceWalker:
    """Answers `suggest_categorical` from a fixed path of choice indices, then with first choices."""

    def __init__(self, path: Sequence[int]) -> None:
        self.taken: list[int] = list(path)
        self.widths: list[int] = []

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        depth = len(self.widths)
        self.widths.append(len(choices))
        if depth == len(self.taken):
            self.taken.append(0)
        return choices[self.taken[depth]]
