"""A saved head as an ONNX graph gives the probabilities of the head loaded back from the
same files; LightGBM's trees go the way LightGBM sends each value, at their thresholds too."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tlfs.models import head_onnx, heads
from tlfs.models.errors import ModelError
from tlfs.models.fit_data import Examples, FitData


def blobs(classes: int = 4, per_class: int = 60, width: int = 12, seed: int = 0, absent: int | None = None) -> FitData:
    """Overlapping Gaussian classes, as float16-rounded features (``absent``: a class with
    no training rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (classes, width))

    def examples(count: int) -> Examples:
        y = np.repeat(np.arange(classes), count)
        X = (centres[y] + rng.normal(0, 1.2, (len(y), width))).astype(np.float16).astype(np.float32)
        keep = y != absent
        return Examples(X[keep], y[keep])

    return FitData(examples(per_class), examples(per_class // 3), classes)


def saved_files(head: heads.Head, folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in head.save(folder)}


def run(model, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {head_onnx.FEATURES: X})[0]


@pytest.mark.parametrize("kind", ["softmax", "lightgbm", "mlp"])
def test_each_heads_graph_gives_the_loaded_heads_probabilities(kind, tmp_path):
    data = blobs(absent=2 if kind != "mlp" else None, per_class=60 if kind != "mlp" else 150)
    head, _ = heads.fit(kind, data, log=lambda *_: None)
    assert kind != "mlp" or head.params["temperature"] != 1  # 200 validation images: the MLP's is fitted
    files = saved_files(head, tmp_path)
    X = blobs(seed=1).validation.X
    expected = heads.load(kind, files, data.classes)(X)
    got = run(head_onnx.head_graph(kind, files, data.classes, X.shape[1]), X)
    assert got.shape == expected.shape == (len(X), data.classes)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    if kind == "softmax":
        assert (got[:, 2] == 0).all()  # the class no training image had is never likely


def test_the_mlp_on_several_layers_takes_signed_square_roots_as_it_did(tmp_path):
    data = blobs(width=16)
    data = FitData(data.train, data.validation, data.classes, block_dims=[6, 10])
    settings = {**heads.MLP_SETTINGS["several_layers"], "one_cycle_epochs": 2, "hidden": 32}
    head = heads.fit_mlp(data, log=lambda *_: None, settings=settings)
    files = saved_files(head, tmp_path)
    X = blobs(width=16, seed=3).validation.X
    assert settings["power"] == 0.5
    np.testing.assert_allclose(run(head_onnx.head_graph("mlp", files, data.classes, 16), X),
                               heads.load("mlp", files, data.classes)(X), atol=1e-5)


def trees_alone(booster, width: int):
    """The ONNX graph of ``booster``'s trees alone: its raw scores out."""
    model = head_onnx.trees_model(booster.dump_model(), width)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def values_at_thresholds(booster, rows: np.ndarray) -> np.ndarray:
    """``rows`` with each split's feature set to the float32 values on both sides of its
    threshold, one split a row: where a float32 rounding of the threshold would send a value
    the other way."""
    out, splits = [], []

    def walk(node):
        if "split_feature" in node:
            splits.append((node["split_feature"], node["threshold"]))
            walk(node["left_child"]), walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    for number, (feature, threshold) in enumerate(splits):
        nearest = np.float32(threshold)
        for value in (np.nextafter(nearest, np.float32(-np.inf)), nearest, np.nextafter(nearest, np.float32(np.inf))):
            row = rows[number % len(rows)].copy()
            row[feature] = value
            out.append(row)
    return np.array(out, np.float32)


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_the_trees_give_lightgbms_raw_scores_even_at_their_thresholds(zero_as_missing):
    import lightgbm as lgb

    data = blobs(classes=3, width=8, per_class=120)
    # float32 values (not float16's), whose midpoints float32 cannot hold: half the thresholds round up
    X = (data.train.X + np.random.default_rng(1).normal(0, 1e-3, data.train.X.shape)).astype(np.float32)
    X[::3, :4] = 0.0  # zeros, which a zero-as-missing booster sends its own way
    params = {**heads.LIGHTGBM_PARAMS, "num_class": 3, "zero_as_missing": zero_as_missing, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(X, label=data.train.y), num_boost_round=15)
    kinds = {t["tree_structure"].get("missing_type") for t in booster.dump_model()["tree_info"]}
    assert ("Zero" in kinds) == zero_as_missing  # both ways of treating zeros are exercised
    probes = np.vstack([X, values_at_thresholds(booster, X)])
    np.testing.assert_allclose(trees_alone(booster, 8).run(None, {head_onnx.FEATURES: probes})[0],
                               booster.predict(probes, raw_score=True), atol=1e-5)


def test_an_unknown_head_or_a_missing_file_is_named():
    with pytest.raises(ModelError, match="unknown head 'forest'"):
        head_onnx.head_graph("forest", {}, 3, 4)
    with pytest.raises(ModelError, match="the lightgbm head's lightgbm_init_softmax.npz is missing"):
        head_onnx.head_graph("lightgbm", {"lightgbm.txt": b""}, 3, 4)
