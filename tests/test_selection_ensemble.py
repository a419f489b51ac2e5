"""automl.selection.ensemble: Caruana selection with replacement, member caps, and the paired bootstrap."""

import numpy as np
import pytest

from automl.selection.ensemble import blend, compare_to_best_single, greedy_selection, photo_losses


def _noisy_models(n: int = 600, classes: int = 4, models: int = 3, seed: int = 0):
    """Independent noisy views of the truth: averaging them helps, as with different backbones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    out = []
    for _ in range(models):
        logits = rng.normal(0, 1.5, (n, classes))
        logits[np.arange(n), y] += 1.5
        e = np.exp(logits)
        out.append(e / e.sum(axis=1, keepdims=True))
    return out, y


def test_selection_beats_every_single_model_on_independent_errors():
    candidates, y = _noisy_models()
    selection = greedy_selection(candidates, y, rounds=20)
    singles = [photo_losses(p, y).mean() for p in candidates]
    assert selection.log_loss < min(singles) - 0.05
    assert selection.weights.sum() == pytest.approx(1.0) and len(selection.members) == 3
    assert selection.log_loss == pytest.approx(photo_losses(blend(candidates, selection.weights), y).mean())
    assert selection.log_loss == min(selection.trajectory)
    comparison = compare_to_best_single(candidates, y, selection)
    assert comparison.ensemble_wins and comparison.wins_at(0.01) and comparison.share_not_better == 0.0
    assert comparison.low < comparison.difference < comparison.high < 0


def test_a_confidently_wrong_candidate_gets_no_weight_and_a_copy_adds_nothing():
    candidates, y = _noisy_models(models=1)
    wrong = np.full_like(candidates[0], 0.01)
    wrong[np.arange(len(y)), (y + 1) % wrong.shape[1]] = 0.97
    selection = greedy_selection([candidates[0], wrong, candidates[0]], y, rounds=10)
    assert selection.members == [0] and selection.weights[0] == 1.0
    comparison = compare_to_best_single([candidates[0], wrong], y, greedy_selection([candidates[0], wrong], y))
    assert comparison.difference == 0.0 and not comparison.ensemble_wins and not comparison.wins_at(0.5)


def test_member_cap_is_kept():
    candidates, y = _noisy_models(models=5, seed=1)
    assert len(greedy_selection(candidates, y, rounds=30).members) > 2
    capped = greedy_selection(candidates, y, rounds=30, max_members=2)
    assert len(capped.members) == 2


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected"):
        greedy_selection([np.zeros((3, 2))], np.array([0, 1]))
    with pytest.raises(ValueError, match="rounds"):
        greedy_selection([np.full((2, 2), 0.5)], np.array([0, 1]), rounds=0)
