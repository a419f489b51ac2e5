"""Linear probe then fine-tune on real EfficientNet-Lite0 activations of animals10 photos (cut `top`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.cache import BottleneckCache
from automl.cache.views import HFLIP, ORIGINAL
from automl.data.dataset import scan_dataset
from automl.data.images import decode_image
from automl.errors import InputError
from automl.selection.folds import assign_folds
from automl.train import assemble
from automl.train.finetune import FinetuneConfig, FoldData, cosine_rate, finetune, probe_head

BACKBONE, WEIGHTS, CUT = "efficientnet_lite0", "default", "top"


@pytest.fixture(scope="module")
def backbone():
    from automl.backbones.registry import get_backbone

    return get_backbone(BACKBONE)


@pytest.fixture(scope="module")
def pool(animals10: Path, backbone, tmp_path_factory: pytest.TempPathFactory):
    """36 photos (4 of each of 9 classes), both views of `all` and `top` cached; fold 0 of 3 held out."""
    records = [r for r in scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=4).records]
    records = [r for r in records if r.label < 9]
    cache = BottleneckCache(tmp_path_factory.mktemp("cache"))
    cache.ensure(backbone, WEIGHTS, ["all", CUT], records, views=[ORIGINAL, HFLIP], progress=False)
    sha1s = [r.sha1 for r in records]
    labels = np.array([r.label for r in records])
    held_out = assign_folds(sha1s, labels, k=3, seed=0) == 0
    return cache, records, sha1s, labels, held_out


def _fold(pool, backbone, cut: str, views=(ORIGINAL,)) -> FoldData:
    cache, _records, sha1s, labels, held_out = pool
    return FoldData.from_cache(cache, backbone, WEIGHTS, cut, sha1s, labels, held_out, num_classes=9, views=views)


def test_flip_rows_are_their_originals_rows_of_the_training_fold(pool, backbone) -> None:
    cache, _records, sha1s, labels, held_out = pool
    fold = _fold(pool, backbone, CUT, views=(ORIGINAL, HFLIP))
    train_sha1s = [s for s, out in zip(sha1s, held_out, strict=True) if not out]
    n = len(train_sha1s)
    assert fold.train_rows == 2 * n and len(fold.y_held_out) == int(held_out.sum()) > 0
    flipped = cache.load(backbone, WEIGHTS, CUT, train_sha1s, view=HFLIP)
    batch = fold.train_batch(np.array([n, n + 1, 0]))  # view 1 rows 0, 1, then view 0 row 0
    np.testing.assert_array_equal(batch[:2], flipped[:2].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(batch[2], fold.x_train[ORIGINAL][0].astype(np.float32))
    assert not set(train_sha1s) & {s for s, out in zip(sha1s, held_out, strict=True) if out}
    np.testing.assert_array_equal(fold.y_train, labels[~held_out])


def test_the_fine_tuned_network_starts_at_the_probe(pool, backbone) -> None:
    probe_fold = _fold(pool, backbone, "all")
    head = probe_head(probe_fold.x_train[ORIGINAL].astype(np.float32), probe_fold.y_train)
    expected = _softmax(probe_fold.x_held_out[ORIGINAL].astype(np.float32) @ head.kernel + head.bias)
    still = finetune(backbone, WEIGHTS, CUT, head, _fold(pool, backbone, CUT), {"learning_rate": 1e-12, "epochs": 1})
    np.testing.assert_allclose(still.probabilities[ORIGINAL], expected, atol=2e-2)  # float16 activations on both sides
    assert np.mean(still.probabilities[ORIGINAL].argmax(1) == expected.argmax(1)) >= 0.9


def test_fine_tuning_trains_the_rest_but_keeps_batch_norm_statistics(pool, backbone) -> None:
    import keras

    probe_fold = _fold(pool, backbone, "all")
    head = probe_head(probe_fold.x_train[ORIGINAL].astype(np.float32), probe_fold.y_train)
    fold = _fold(pool, backbone, CUT, views=(ORIGINAL, HFLIP))
    result = finetune(backbone, WEIGHTS, CUT, head, fold, FinetuneConfig(learning_rate=1e-3, epochs=2))
    assert (result.epochs_done, len(result.trial.history)) == (2, 2)

    original = backbone.trainable_rest(backbone.build(WEIGHTS), CUT)
    tuned = backbone.trainable_rest(backbone.build(WEIGHTS), CUT)
    tuned.set_weights(result.trial.weights[: len(original.weights)])
    norms = [layer for layer in original.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    for layer in norms:
        for before, after in zip(layer.get_weights(), tuned.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(before, after)  # moving mean/variance, gamma, beta
    convs = [layer for layer in original.layers if isinstance(layer, keras.layers.Conv2D)]
    assert any(
        np.abs(layer.get_weights()[0] - tuned.get_layer(layer.name).get_weights()[0]).max() > 1e-6 for layer in convs
    )

    # The result assembles like any trial: raw pixels of the held-out photos give the held-out probabilities.
    _cache, records, _sha1s, _labels, held_out = pool
    photos = [r for r, out in zip(records, held_out, strict=True) if out]
    model = assemble(backbone, WEIGHTS, CUT, result.trial, [str(i) for i in range(9)])
    pixels = np.stack([decode_image(r.path.read_bytes(), backbone.resize) for r in photos]).astype(np.float32)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), result.probabilities[ORIGINAL], atol=2e-2)


def test_a_time_limit_shortens_the_schedule_and_keeps_the_last_epoch(pool, backbone) -> None:
    probe_fold = _fold(pool, backbone, "all")
    head = probe_head(probe_fold.x_train[ORIGINAL].astype(np.float32), probe_fold.y_train)
    result = finetune(backbone, WEIGHTS, CUT, head, _fold(pool, backbone, CUT), {"epochs": 50}, time_limit=0.01)
    assert (result.epochs_done, result.epochs_planned, result.trial.stopped) == (1, 50, True)
    assert np.allclose(result.probabilities[ORIGINAL].sum(axis=1), 1.0, atol=1e-5)


def test_bad_inputs_are_named(pool, backbone) -> None:
    probe_fold = _fold(pool, backbone, "all")
    head = probe_head(probe_fold.x_train[ORIGINAL].astype(np.float32), probe_fold.y_train)
    with pytest.raises(InputError, match="cut 'all' has nothing to fine-tune"):
        finetune(backbone, WEIGHTS, "all", head, probe_fold)
    with pytest.raises(InputError, match="'learning_rate'"):
        finetune(backbone, WEIGHTS, CUT, head, _fold(pool, backbone, CUT), {"learning_rate": -1.0})
    with pytest.raises(InputError, match="unknown key"):
        finetune(backbone, WEIGHTS, CUT, head, _fold(pool, backbone, CUT), {"lr": 1e-4})


def test_cosine_rate() -> None:
    assert cosine_rate(1e-3, 0, 100) == pytest.approx(1e-3)
    assert cosine_rate(1e-3, 50, 100) == pytest.approx(5e-4)
    assert cosine_rate(1e-3, 100, 100) == pytest.approx(0.0) == cosine_rate(1e-3, 150, 100)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
