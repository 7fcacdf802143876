import numpy as np
import pytest

from tlfs.models.errors import ModelError
from tlfs.models.fit_data import Examples, FitData
from tlfs.models.heads import HEADS, fit


def blobs(n: int, classes: int = 3, dims: int = 16, seed: int = 0):
    centers = np.random.default_rng(42).normal(0, 4, (classes, dims))  # the same classes in every sample
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(0, 1, (n, dims))).astype(np.float32), y


def split(X, y, Xv, yv, classes: int, block_dims=None) -> FitData:
    return FitData(Examples(X, y), Examples(Xv, yv), classes, block_dims)


@pytest.mark.parametrize("kind", HEADS)
def test_each_head_learns_separable_classes_and_saves_itself(kind, tmp_path):
    X, y = blobs(600)
    Xv, yv = blobs(150, seed=1)
    Xt, yt = blobs(300, seed=2)
    head, seconds = fit(kind, split(X, y, Xv, yv, 3), log=lambda *_: None)
    assert (head.predict(Xt) == yt).mean() > 0.95
    assert head.predict_proba(Xt).shape == (300, 3)
    assert all(p.exists() for p in head.save(tmp_path))


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("block_dims", [None, [4, 4]])
def test_a_saved_head_loads_back_with_the_same_probabilities(kind, block_dims, tmp_path):
    """What ``tlfs predict`` stands on: the files a head saves give back its predictions,
    on one layer and on concatenated ones (the MLP's power normalisation), a class absent
    from training included (its column stays 0)."""
    from tlfs.models.heads import SAVED, load

    X, y = blobs(600)
    Xv, yv = blobs(250, seed=1)  # enough for the MLP's temperature, folded into its saved weights
    Xt, _ = blobs(300, seed=2)
    data = split(np.hstack([X, X[:, ::-1]]), y, np.hstack([Xv, Xv[:, ::-1]]), yv, 4, block_dims and [X.shape[1]] * 2)
    head, _ = fit(kind, data, log=lambda *_: None)
    written = head.save(tmp_path)
    assert sorted(p.name for p in written) == sorted(SAVED[kind])
    loaded = load(kind, {p.name: p.read_bytes() for p in written}, 4)
    queries = np.hstack([Xt, Xt[:, ::-1]])
    np.testing.assert_allclose(loaded(queries), head.predict_proba(queries), rtol=1e-5, atol=1e-7)
    assert (loaded(queries)[:, 3] == 0).all() if kind == "softmax" else True
    with pytest.raises(ModelError, match=f"the {kind} head's {SAVED[kind][-1]} is missing"):
        load(kind, {p.name: p.read_bytes() for p in written if p.name != SAVED[kind][-1]}, 4)


def test_heads_are_no_better_than_chance_on_noise():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 8)).astype(np.float32), rng.integers(0, 4, 400)
    Xt, yt = rng.normal(size=(400, 8)).astype(np.float32), rng.integers(0, 4, 400)
    head, _ = fit("softmax", split(X, y, X[:50], y[:50], 4), log=lambda *_: None)
    assert (head.predict(Xt) == yt).mean() < 0.4


def test_unknown_head_is_refused():
    with pytest.raises(ModelError, match="unknown head"):
        fit("svm", split(np.zeros((2, 2)), np.zeros(2), np.zeros((2, 2)), np.zeros(2), 2))


def test_concatenated_layers_are_weighted_equally_not_by_width():
    from tlfs.models.heads import _standardizer

    rng = np.random.default_rng(0)
    # wider than the slices of columns the statistics are summed over
    X = np.hstack([rng.normal(5, 3, (500, 4)), rng.normal(-2, 7, (500, 1100))]).astype(np.float32)
    mean, std = _standardizer(X, [4, 1100])
    Z = (X - mean) / std
    total_variance = [Z[:, :4].var(axis=0).sum(), Z[:, 4:].var(axis=0).sum()]
    assert np.allclose(total_variance, [4, 4], rtol=1e-3)  # each layer: the narrowest layer's total
    assert np.allclose(mean, X.mean(axis=0), atol=1e-4)
    with pytest.raises(ModelError, match="do not add up"):
        _standardizer(X, [4, 60])


@pytest.mark.parametrize("kind", HEADS)
def test_each_head_fits_several_layers_at_once(kind):
    X, y = blobs(600, dims=24)
    Xv, yv = blobs(150, dims=24, seed=1)
    head, _ = fit(kind, split(X, y, Xv, yv, 3, block_dims=[8, 16]), log=lambda *_: None)
    assert (head.predict(Xv) == yv).mean() > 0.95


def test_softmax_solves_scikit_learns_problem_at_the_same_C():
    """models/linear.py minimises LogisticRegression's objective divided by C * n."""
    from sklearn.linear_model import LogisticRegression

    from tlfs.models.linear import fit_path

    X, y = blobs(500, classes=4, dims=12)
    reference = LogisticRegression(C=0.05, tol=1e-8, max_iter=5000).fit(X, y)
    ours = fit_path(split(X, y, X[:100], y[:100], 4), grid=(0.05,), log=lambda *_: None, max_iter=500)
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=2e-3)
    np.testing.assert_allclose(ours.intercept - ours.intercept.mean(), reference.intercept_ - reference.intercept_.mean(), atol=1e-2)


def test_the_regularisation_path_stops_once_validation_accuracy_falls():
    from tlfs.models.linear import fit_path

    X, y = blobs(300, classes=3, dims=8)
    said = []
    # validation labels that no C can predict: accuracy never rises past the first C
    best = fit_path(split(X, y, X[:60], (y[:60] + 1) % 3, 3), grid=(0.01, 0.1, 1.0, 10.0, 100.0), log=said.append, patience=2)
    assert len(said) < 5 and best.C == 0.01


def test_a_class_absent_from_training_is_never_predicted_but_keeps_its_column():
    X, y = blobs(400, classes=3)
    head, _ = fit("softmax", split(X[y != 1], y[y != 1], X[:50], y[:50], 3), log=lambda *_: None)
    proba = head.predict_proba(X)
    assert proba.shape == (400, 3) and np.all(proba[:, 1] == 0) and np.allclose(proba.sum(1), 1)


def test_lightgbm_boosts_from_the_softmax_scores_and_saves_both(tmp_path):
    X, y = blobs(600)
    Xv, yv = blobs(150, seed=1)
    head, _ = fit("lightgbm", split(X, y, Xv, yv, 3), log=lambda *_: None)
    assert head.params["init_score"] == "softmax head"
    assert sorted(p.name for p in head.save(tmp_path)) == ["lightgbm.txt", "lightgbm_init_softmax.npz"]


def test_the_mlp_on_wide_concatenations_is_no_wider_and_shorter():
    from tlfs.models.heads import WIDE_FEATURES, bf16_native, mlp_settings

    assert mlp_settings(1280, None)[0] == "one_layer"
    assert mlp_settings(2048, [24, 40, 80, 112, 192, 320, 1280])[0] == "several_layers"
    wide, settings = mlp_settings(10240, [24, 96] * 6 + [1280, 5120])
    assert wide == ("wide_layers_bf16" if bf16_native() else "wide_layers") and WIDE_FEATURES < 10240
    several = mlp_settings(2048, [1024, 1024])[1]
    assert settings["hidden"] <= several["hidden"] and settings["one_cycle_epochs"] < several["one_cycle_epochs"]


def test_the_mlp_trains_in_bfloat16_where_the_cpu_has_it_and_predicts_in_float32():
    from tlfs.models.heads import bf16_native, fit_mlp

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 64)) * 3
    y = np.repeat(np.arange(3), 60)
    X = (centers[y] + rng.normal(size=(180, 64))).astype(np.float32)
    base = {"hidden": 32, "input_dropout": 0.0, "dropout": 0.0, "label_smoothing": 0.0, "patience": 0, "batch": 32,
            "lr": 3e-3, "power": 1.0, "one_cycle_epochs": 3}
    half = fit_mlp(split(X, y, X[:30], y[:30], 3), log=lambda *_: None, settings={**base, "bf16": True})
    full = fit_mlp(split(X, y, X[:30], y[:30], 3), log=lambda *_: None, settings=base)
    assert half.params["compute"] == ("bfloat16" if bf16_native() else "float32") and full.params["compute"] == "float32"
    proba = half.predict_proba(X)
    assert proba.dtype == np.float32 and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (half.predict(X) == y).mean() > 0.9


def test_the_temperature_fitted_is_the_one_the_labels_were_drawn_at():
    from tlfs.models.heads import MIN_CALIBRATION_IMAGES, TEMPERATURE_BOUNDS, fitted_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5000, 5))
    for temperature in (0.5, 2.0):
        p = np.exp(logits / temperature)
        p /= p.sum(1, keepdims=True)
        y = np.array([rng.choice(5, p=row) for row in p])
        assert fitted_temperature(logits, y) == pytest.approx(temperature, rel=0.1)
    assert fitted_temperature(logits, logits.argmax(1)) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)  # never wrong
    few = MIN_CALIBRATION_IMAGES - 1
    assert fitted_temperature(logits[:few], logits[:few].argmax(1)) == 1.0


def test_the_mlps_probabilities_are_calibrated_on_the_validation_images_and_its_classes_left_as_they_are():
    """An MLP stopped early on overlapping classes is far from calibrated (here too unsure);
    its temperature, fitted on the validation images, brings its probabilities near how often
    it is right on new ones."""
    from tlfs.pipeline.fit import confidence

    def overlapping(n, seed):
        centers = np.random.default_rng(7).normal(0, 0.6, (4, 16))
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 4, n)
        return (centers[y] + rng.normal(0, 1, (n, 16))).astype(np.float32), y

    (X, y), (Xv, yv), (Xt, yt) = overlapping(800, 0), overlapping(400, 1), overlapping(2000, 2)
    head, _ = fit("mlp", split(X, y, Xv, yv, 4), log=lambda *_: None)
    proba = head.predict_proba(Xt)
    temperature = head.params["temperature"]
    unscaled = np.exp(np.log(proba) * temperature)  # softmax(T log p) = the probabilities before scaling
    unscaled /= unscaled.sum(1, keepdims=True)
    assert (unscaled.argmax(1) == proba.argmax(1)).all()
    before = confidence(unscaled.max(1), unscaled.argmax(1) == yt)["calibration_error"]
    after = confidence(proba.max(1), proba.argmax(1) == yt)["calibration_error"]
    assert temperature != 1 and before > 0.1 and after < before / 4, (temperature, before, after)


def test_lightgbms_progress_goes_to_the_log_not_to_stdout(capsys):
    """A command's stdout is its results: LightGBM's rounds are logged as the rest of ``fit``."""
    def crossed(n, seed):  # classes no linear head separates: boosting runs past 50 rounds
        rng = np.random.default_rng(seed)
        X = rng.normal(0, 1, (n, 8)).astype(np.float32)
        return X, ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int) + 2 * (X[:, 2] > 0)

    said = []
    head, _ = fit("lightgbm", split(*crossed(3000, 0), *crossed(600, 1), 4), log=said.append)
    assert head.params["best_iteration"] >= 50
    assert any(line.startswith("  lightgbm: round 50, validation multi_logloss ") for line in said)
    assert capsys.readouterr().out == ""


def imbalanced(shares: list[float], n: int, seed: int, spread: float = 2.5):
    """Overlapping classes drawn in ``shares`` (a rare class among common ones)."""
    centers = np.random.default_rng(7).normal(0, 1, (len(shares), 8))
    rng = np.random.default_rng(seed)
    y = rng.choice(len(shares), n, p=shares)
    return (centers[y] + rng.normal(0, spread / 4, (n, 8))).astype(np.float32), y


@pytest.mark.parametrize("kind", HEADS)
def test_balanced_divides_the_training_class_shares_out_of_each_heads_probabilities(kind, tmp_path):
    """The same head, the same fit, each probability divided by its class's share of the
    training rows and the row normalised again; saved and loaded back as it predicted."""
    from tlfs.models.fit_data import class_offsets
    from tlfs.models.heads import load

    shares = [0.7, 0.25, 0.05]
    X, y = imbalanced(shares, 1200, seed=0)
    Xv, yv = imbalanced(shares, 300, seed=1)
    Xt, _ = imbalanced([1 / 3] * 3, 300, seed=2)
    plain, _ = fit(kind, split(X, y, Xv, yv, 3), log=lambda *_: None)
    data = FitData(Examples(X, y), Examples(Xv, yv), 3, balanced=True)
    balanced, _ = fit(kind, data, log=lambda *_: None)
    counts = np.bincount(y, minlength=3)
    np.testing.assert_allclose(np.exp(-class_offsets(data)), counts / counts.sum(), rtol=1e-6)
    expected = plain.predict_proba(Xt) * (counts.sum() / counts)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(balanced.predict_proba(Xt), expected, rtol=1e-4, atol=1e-6)
    assert balanced.params["balanced"] and "balanced" not in plain.params
    assert balanced.val_accuracy == (balanced.predict(Xv) == yv).mean()
    written = balanced.save(tmp_path)
    loaded = load(kind, {p.name: p.read_bytes() for p in written}, 3)
    np.testing.assert_allclose(loaded(Xt), balanced.predict_proba(Xt), rtol=1e-5, atol=1e-7)


def test_balanced_finds_more_of_a_rare_class_and_scores_better_averaged_over_classes():
    shares = [0.6, 0.35, 0.05]
    X, y = imbalanced(shares, 3000, seed=0)
    Xv, yv = imbalanced(shares, 600, seed=1)
    Xt, yt = imbalanced([1 / 3] * 3, 3000, seed=2)  # every class alike, as the balanced accuracy weighs them

    def recalls(head):
        predicted = head.predict(Xt)
        return np.array([(predicted[yt == c] == c).mean() for c in range(3)])

    plain = recalls(fit("softmax", split(X, y, Xv, yv, 3), log=lambda *_: None)[0])
    balanced = recalls(fit("softmax", FitData(Examples(X, y), Examples(Xv, yv), 3, balanced=True), log=lambda *_: None)[0])
    assert balanced[2] > plain[2] + 0.1, (plain, balanced)
    assert balanced.mean() > plain.mean() + 0.02, (plain, balanced)
