"""Greedy ensemble selection (Caruana et al. 2004) over out-of-fold probabilities, and whether it beats noise.

With replacement, as auto-sklearn and AutoGluon do: each round adds the candidate (possibly one already in)
that most lowers the OOF log-loss of the running average, so the weights come out as counts / rounds and a
strong model can outweigh a weak one without any continuous optimiser. The rounds are cut back to the best
prefix (AutoGluon's choice): adding a member never has to make the ensemble worse.

Choosing members on the same OOF photos that score them flatters the ensemble a little, so it is kept only
when a paired bootstrap over photos says it is better beyond the noise: `Comparison.wins_at(alpha)` (the search
uses a one-sided alpha of 0.10, `automl.search.selection.ENSEMBLE_ALPHA`; `ensemble_wins` is the stricter 95 %
interval): a gain of one or two photos on a few hundred is not enough to pay for a second backbone at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from automl.metrics import PROBABILITY_FLOOR

DEFAULT_ROUNDS = 25
DEFAULT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Selection:
    """Member weights (one per candidate, summing to 1; 0 for candidates left out) and the OOF log-loss."""

    weights: np.ndarray
    log_loss: float
    trajectory: list[float]
    """OOF log-loss after each round, before cutting back to the best prefix."""

    @property
    def members(self) -> list[int]:
        """Indices of the candidates with a positive weight, heaviest first."""
        chosen = np.flatnonzero(self.weights > 0)
        return [int(i) for i in chosen[np.argsort(-self.weights[chosen], kind="stable")]]


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of (ensemble - best single) mean OOF log-loss: negative is better for the ensemble."""

    best_single: int
    difference: float
    low: float
    high: float
    share_not_better: float
    """Share of bootstrap resamples where the ensemble's log-loss is not lower: a one-sided p-value."""

    @property
    def ensemble_wins(self) -> bool:
        """The whole 95 % interval lies below zero (one-sided: at most 2.5 % of resamples not better)."""
        return self.high < 0.0

    def wins_at(self, alpha: float) -> bool:
        """At most `alpha` of the resamples are not better: a one-sided test at level `alpha`."""
        return self.share_not_better <= alpha


def _stack(probabilities: Sequence[np.ndarray], y_true: np.ndarray) -> np.ndarray:
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    if stacked.ndim != 3 or stacked.shape[1] != len(y_true):
        raise ValueError(f"candidates' probabilities have shape {stacked.shape}; expected (models, {len(y_true)}, K)")
    if len(y_true) == 0 or y_true.min() < 0 or y_true.max() >= stacked.shape[2]:
        raise ValueError(f"labels must be class indices 0..{stacked.shape[2] - 1}, at least one photo")
    return stacked


def photo_losses(probabilities: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Negative log-probability of the true class, per photo."""
    picked = probabilities[..., np.arange(len(y_true)), y_true]
    return -np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0))


def greedy_selection(
    probabilities: Sequence[np.ndarray],
    y_true: Sequence[int] | np.ndarray,
    *,
    rounds: int = DEFAULT_ROUNDS,
    max_members: int | None = None,
) -> Selection:
    """Caruana's forward selection with replacement over candidates' OOF probabilities (each (N, K)).

    `max_members` caps the distinct members (each costs a forward pass at inference); once reached, only
    chosen members can be added again. Ties go to the lower candidate index (pass the best single first).
    """
    y = np.asarray(y_true, dtype=np.int64)
    stacked = _stack(probabilities, y)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if max_members is not None and max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    rows = np.arange(len(y))
    true_class = stacked[:, rows, y]  # (models, N): all the log-loss needs of each candidate
    total = np.zeros(len(y))
    counts = np.zeros(len(stacked), dtype=np.int64)
    trajectory: list[float] = []
    chosen: list[int] = []
    for step in range(1, rounds + 1):
        allowed = np.arange(len(stacked))
        if max_members is not None and np.count_nonzero(counts) >= max_members:
            allowed = np.flatnonzero(counts)
        candidate_mean = (total[None, :] + true_class[allowed]) / step
        losses = -np.log(np.clip(candidate_mean, PROBABILITY_FLOOR, 1.0)).mean(axis=1)
        pick = int(allowed[int(np.argmin(losses))])
        total += true_class[pick]
        counts[pick] += 1
        chosen.append(pick)
        trajectory.append(float(losses.min()))
    best = int(np.argmin(trajectory))  # earliest minimum: the smallest ensemble that scores best
    kept = np.bincount(chosen[: best + 1], minlength=len(stacked))
    return Selection(weights=kept / kept.sum(), log_loss=trajectory[best], trajectory=trajectory)


def blend(probabilities: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The weighted average of the candidates' probabilities: what the exported ensemble computes."""
    return np.tensordot(np.asarray(weights, dtype=np.float64), np.stack(probabilities).astype(np.float64), axes=1)


def compare_to_best_single(
    probabilities: Sequence[np.ndarray],
    y_true: Sequence[int] | np.ndarray,
    selection: Selection,
    *,
    samples: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap over photos of the ensemble's mean log-loss minus the best single candidate's.

    The same resampled photos score both, so what the photos have in common (hard ones, easy ones)
    cancels out and only the difference between the two models varies.
    """
    y = np.asarray(y_true, dtype=np.int64)
    stacked = _stack(probabilities, y)
    single = photo_losses(stacked, y)  # (models, N)
    best = int(np.argmin(single.mean(axis=1)))
    difference = photo_losses(blend(list(stacked), selection.weights), y) - single[best]
    rng = np.random.default_rng(seed)
    resampled = rng.integers(0, len(y), size=(samples, len(y)))
    means = difference[resampled].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Comparison(
        best_single=best,
        difference=float(difference.mean()),
        low=float(low),
        high=float(high),
        share_not_better=float((means >= 0).mean()),
    )
