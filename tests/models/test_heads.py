import numpy as np
import pytest

from tlfs.models.errors import ModelError
from tlfs.models.heads import HEADS, fit


def blobs(n: int, classes: int = 3, dims: int = 16, seed: int = 0):
    centers = np.random.default_rng(42).normal(0, 4, (classes, dims))  # the same classes in every sample
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(0, 1, (n, dims))).astype(np.float32), y


@pytest.mark.parametrize("kind", HEADS)
def test_each_head_learns_separable_classes_and_saves_itself(kind, tmp_path):
    X, y = blobs(600)
    Xv, yv = blobs(150, seed=1)
    Xt, yt = blobs(300, seed=2)
    head, seconds = fit(kind, X, y, Xv, yv, classes=3, log=lambda *_: None)
    assert (head.predict(Xt) == yt).mean() > 0.95
    assert head.predict_proba(Xt).shape == (300, 3)
    assert all(p.exists() for p in head.save(tmp_path))


def test_heads_are_no_better_than_chance_on_noise():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 8)).astype(np.float32), rng.integers(0, 4, 400)
    Xt, yt = rng.normal(size=(400, 8)).astype(np.float32), rng.integers(0, 4, 400)
    head, _ = fit("softmax", X, y, X[:50], y[:50], classes=4, log=lambda *_: None)
    assert (head.predict(Xt) == yt).mean() < 0.4


def test_unknown_head_is_refused():
    with pytest.raises(ModelError, match="unknown head"):
        fit("svm", np.zeros((2, 2)), np.zeros(2), np.zeros((2, 2)), np.zeros(2), 2)


def test_concatenated_layers_are_weighted_equally_not_by_width():
    from tlfs.models.heads import _standardizer

    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(5, 3, (500, 4)), rng.normal(-2, 7, (500, 64))]).astype(np.float32)
    mean, std = _standardizer(X, [4, 64])
    Z = (X - mean) / std
    total_variance = [Z[:, :4].var(axis=0).sum(), Z[:, 4:].var(axis=0).sum()]
    assert np.allclose(total_variance, [4, 4], rtol=1e-3)  # each layer: the narrowest layer's total
    with pytest.raises(ModelError, match="do not add up"):
        _standardizer(X, [4, 60])


@pytest.mark.parametrize("kind", HEADS)
def test_each_head_fits_several_layers_at_once(kind):
    X, y = blobs(600, dims=24)
    Xv, yv = blobs(150, dims=24, seed=1)
    head, _ = fit(kind, X, y, Xv, yv, classes=3, log=lambda *_: None, block_dims=[8, 16])
    assert (head.predict(Xv) == yv).mean() > 0.95
