"""automl.selection.linear: a standardised logistic regression folded into one affine map, fold heads averaged."""

import numpy as np
import pytest

from automl.selection.linear import LinearHead, mean_of_heads


@pytest.mark.parametrize("classes", [2, 3])
def test_folded_head_gives_scikit_learns_probabilities(classes: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, (120, 8))
    y = (x[:, 0] + x[:, 1] > 6).astype(int) + (classes == 3) * (x[:, 2] > 3)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=0.5).fit(scaler.transform(x), y)
    head = LinearHead.from_standardized(model.coef_, model.intercept_, scaler.mean_, scaler.scale_)
    logits = head.logits(x)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), model.predict_proba(scaler.transform(x)), atol=1e-9)


def test_mean_of_heads_averages_the_logits():
    rng = np.random.default_rng(1)
    heads = [LinearHead(rng.normal(size=(6, 3)), rng.normal(size=3)) for _ in range(5)]
    x = rng.normal(size=(10, 6))
    np.testing.assert_allclose(mean_of_heads(heads).logits(x), np.mean([h.logits(x) for h in heads], axis=0))
    with pytest.raises(ValueError, match="different shapes"):
        mean_of_heads([heads[0], LinearHead(np.zeros((5, 3)), np.zeros(3))])
    with pytest.raises(ValueError, match="kernel"):
        LinearHead(np.zeros((5, 3)), np.zeros(4))
