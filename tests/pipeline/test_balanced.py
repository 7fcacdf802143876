"""Heads for imbalanced classes: ``fit --balanced`` saves a head beside the plain one that
predicts as if every class were equally common, and every head's balanced accuracy is
recorded, end to end on a real extraction."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.fit import fit, frequent_confusions, sweep
from tlfs.pipeline.predict import PredictRequest, predict
from tests.conftest import noisy_images, write_tree
from tests.extraction import run_extract

RARE = 4  # training images of the rare class, against 24 of each other


@pytest.fixture(scope="module")
def imbalanced_set(tmp_path_factory, lite0, models_root):
    """Noisy colours, 24 training images of red and green, RARE of blue; 12 test images each."""
    root = tmp_path_factory.mktemp("imbalanced")
    images = {**{k: v for k, v in noisy_images(per_class=24).items() if k.startswith("train/")},
              **{k: v for k, v in noisy_images(per_class=12, seed=1).items() if k.startswith("test/")}}
    images = {k: v for k, v in images.items() if not (k.startswith("train/blue/") and int(k[-7:-4]) >= RARE)}
    source = write_tree(root / "images", images)
    store = str(root / "store")
    run_extract("imbalanced", [str(source)], "efficientnet_lite0", store, models_root, shard_size=40,
                layers=["block7", "head"], show_progress=False, log=lambda *_: None)
    return features.open_set("imbalanced", "efficientnet_lite0", store=store), source, store


def test_fit_says_the_classes_are_imbalanced_and_records_every_heads_balanced_accuracy(imbalanced_set):
    from sklearn.metrics import balanced_accuracy_score

    feature_set, _, store = imbalanced_set
    said = []
    result = fit(feature_set, ["head"], "softmax", log=said.append)
    assert any("the classes are imbalanced: " in line and "blue 4 " in line and "(6x)" in line for line in said), said
    assert result["balanced"] is False and result["saved_to"].endswith("/softmax-head")
    predictions = pd.read_parquet(f"{result['saved_to']}/test_predictions.parquet")
    assert result["test_balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(predictions["label_name"], predictions["predicted"]))


@pytest.mark.parametrize("head", ["softmax", "mlp"])
def test_a_balanced_head_is_saved_beside_the_plain_one_and_predicts_divided_by_the_class_shares(imbalanced_set, head):
    """Read back from its saved files as ``predict`` reads it: the balanced head's
    probabilities on the set's test images are the plain head's divided by each class's
    share of the rows it was fitted on, normalised again; ``predict`` gives its classes."""
    from tlfs.pipeline.saved_heads import load_head

    feature_set, source, store = imbalanced_set
    plain = fit(feature_set, ["head"], head, log=lambda *_: None)
    balanced = fit(feature_set, ["head"], head, log=lambda *_: None, balanced=True)
    assert balanced["saved_to"] == plain["saved_to"] + "-balanced" and balanced["balanced"] is True
    shares = np.exp(-np.array(balanced["params"]["class_offsets"]))
    n_fit = balanced["n_train"]  # the rows it was fitted on: the training images less the validation ones
    assert shares.sum() == pytest.approx(1, abs=1e-3) and shares[0] * n_fit == pytest.approx(RARE - 1, abs=0.01)  # blue first

    X, _, ids = feature_set.matrices(["head"], "test")
    expected = load_head(feature_set, f"{head}-head").predict_proba(X) / shares
    expected /= expected.sum(axis=1, keepdims=True)
    got = load_head(feature_set, f"{head}-head-balanced").predict_proba(X)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    rows = predict(PredictRequest("imbalanced", "efficientnet_lite0", (str(Path(source) / "test"),), f"{head}-head-balanced",
                                  store), log=lambda *_: None)
    by_image = {Path(r.image).relative_to(source).as_posix(): r.label for r in rows}
    assert [by_image[i] for i in ids] == [feature_set.classes[c] for c in got.argmax(axis=1)]


def test_a_balanced_sweep_chooses_by_validation_balanced_accuracy_and_names_its_head(imbalanced_set, capsys):
    feature_set, _, store = imbalanced_set
    summary = sweep(feature_set, log=lambda *_: None, balanced=True)
    validation = summary["balanced_accuracy"]["validation"]
    assert summary["chosen_by"] == "validation_balanced_accuracy" and summary["balanced"] is True
    assert validation[summary["best_layer"]] == max(validation.values())  # among equals, the surest (test_fit)
    assert summary["best_head"]["saved_to"].endswith(f"/softmax-{summary['best_layer']}-balanced")
    saved = json.loads((Path(summary["saved_to"]) / "sweep.json").read_text())
    assert saved["balanced"] is True and saved["balanced_accuracy"] == summary["balanced_accuracy"]
    from tlfs.pipeline.saved_heads import default_head

    assert default_head(feature_set) == f"softmax-{summary['best_layer']}-balanced"  # what predict uses by default


def test_the_cli_fits_balanced_and_lists_the_balanced_accuracy(imbalanced_set, capsys):
    _, _, store = imbalanced_set
    assert main(["fit", "--dataset", "imbalanced", "--layer", "block7", "--head", "softmax", "--balanced",
                 "--store", store]) == 0
    out = capsys.readouterr().out
    assert "softmax on block7 (balanced): test accuracy " in out and ", balanced accuracy " in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["balanced"] is True and result["saved_to"].endswith("/softmax-block7-balanced")
    metrics = json.loads((Path(result["saved_to"]) / "metrics.json").read_text())
    classes, mistakes = metrics["classes"], frequent_confusions(metrics["confusion_matrix"], 3)
    assert ("  most often taken for another: " + ", ".join(f"{classes[i]} as {classes[j]} {n}" for n, i, j in mistakes)
            in out.splitlines()) == bool(mistakes)
    assert main(["heads", "--dataset", "imbalanced", "--store", store]) == 0
    listed = capsys.readouterr().out
    line = next(line for line in listed.splitlines() if "softmax-block7-balanced" in line)
    assert f"{result['test_balanced_accuracy']:.4f}" in line


def test_the_fit_heads_tasks_fit_balanced_heads_after_a_balanced_sweep_and_ship_by_balanced_accuracy(imbalanced_set):
    from tlfs.pipeline import tasks

    feature_set, _, store = imbalanced_set
    target = tasks.SetTarget("imbalanced", feature_set.backbone_version, store, feature_set.version)
    swept = tasks.sweep_layers(target, log=lambda *_: None, balanced=True)
    fitted = tasks.heads_on_best_layer(target, swept, ["softmax", "mlp"], log=lambda *_: None)
    assert [(r["head"], r["balanced"]) for r in fitted] == [("softmax", True), ("mlp", True)]
    assert fitted[1]["saved_to"].endswith(f"/mlp-{swept['best_layer']}-balanced")
    # the plain accuracy favours the softmax head, the balanced accuracy the MLP: the balanced one decides
    planted = [{**fitted[0], "validation_accuracy": 0.9, "validation_balanced_accuracy": 0.5},
               {**fitted[1], "validation_accuracy": 0.6, "validation_balanced_accuracy": 0.7}]
    said = []
    shipped = tasks.ship_best_head(target, planted, log=said.append)
    assert shipped["head"] == f"mlp-{swept['best_layer']}-balanced"
    assert said[0].startswith(f"shipping mlp-{swept['best_layer']}-balanced (validation balanced accuracy 0.7000")


def test_heads_marks_the_best_plain_head_by_validation_accuracy_and_the_best_balanced_one_by_balanced_accuracy(
        imbalanced_set, capsys):
    from tlfs.pipeline.saved_heads import head_board

    feature_set, _, store = imbalanced_set
    for balanced in (False, True):
        for head in ("softmax", "mlp"):
            fit(feature_set, ["block7"], head, log=lambda *_: None, balanced=balanced)
    # planted so that the two measures disagree on each kind: each mark must follow its own
    planted = {"softmax-block7": (0.9, 0.5), "mlp-block7": (0.8, 0.7),
               "softmax-block7-balanced": (0.95, 0.6), "mlp-block7-balanced": (0.7, 0.8)}
    for path in (Path(feature_set.uri) / "_heads").glob("*/metrics.json"):  # the heads other tests saved: below them
        accuracy, balanced_accuracy = planted.get(path.parent.name, (0.1, 0.1))
        path.write_text(json.dumps({**json.loads(path.read_text()), "validation_accuracy": accuracy,
                                    "validation_balanced_accuracy": balanced_accuracy}))
    board = head_board(store, "imbalanced").set_index("name")
    assert list(board.index[board["best"]]) == ["softmax-block7"]  # not the balanced head of 0.95
    assert list(board.index[board["best_balanced"]]) == ["mlp-block7-balanced"]
    assert main(["heads", "--dataset", "imbalanced", "--store", store]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.split()[2] == "mlp-block7-balanced").endswith(
        "<- best balanced (by validation balanced accuracy)")
    assert json.loads(out.strip().splitlines()[-1])["best_balanced"]["imbalanced"]["head"] == "mlp-block7-balanced"


def test_the_advisor_shows_how_imbalanced_the_classes_are_beside_the_size(imbalanced_set):
    from tlfs.pipeline.advise import advise, describe

    feature_set, _, _ = imbalanced_set
    result = advise(feature_set, log=lambda *_: None)
    assert result["size"]["balance"] == {"commonest": "green", "commonest_images": 24, "rarest": "blue",
                                         "rarest_images": RARE, "ratio": 6.0, "imbalanced": True}
    assert ("  classes: imbalanced, green 24 training images to blue 4 (6x): heads fitted with --balanced find more of "
            "the rare classes") in describe(result).splitlines()


def test_a_balanced_learning_curve_is_of_balanced_heads_and_their_balanced_accuracy_and_the_advisor_says_so(
        imbalanced_set, monkeypatch):
    from tlfs.models import heads
    from tlfs.pipeline import tasks
    from tlfs.pipeline.advise import advise, describe
    from tlfs.pipeline.learning_curve import LearningCurveRequest, last_doubling_gain, learning_curve

    feature_set, _, store = imbalanced_set
    fitted_balanced = []  # whether each head the curves fit is balanced
    real_fit = heads.fit
    monkeypatch.setattr(heads, "fit",
                        lambda kind, data, **kw: fitted_balanced.append(data.balanced) or real_fit(kind, data, **kw))
    request = LearningCurveRequest("imbalanced", "efficientnet_lite0", ("block7",), shares=(0.25, 0.5, 1.0), store=store)
    plain = learning_curve(request, log=lambda *_: None)
    balanced = learning_curve(LearningCurveRequest(**{**request.__dict__, "balanced": True}), log=lambda *_: None)
    assert fitted_balanced == [False] * 3 + [True] * 3
    assert plain["saved_to"].endswith("/learning_curve-softmax-block7.json") and plain["measure"] == "accuracy"
    assert balanced["saved_to"].endswith("/learning_curve-softmax-block7-balanced.json")
    assert balanced["measure"] == "balanced_accuracy" and balanced["balanced"] is True
    assert balanced["last_doubling_gain"] == last_doubling_gain(balanced["points"], measure="balanced_accuracy")
    # the same images at each point, the heads balanced or not: where the plain head misses blue, the balanced finds it
    assert [p["images"] for p in plain["points"]] == [p["images"] for p in balanced["points"]]
    assert all(0 <= p["test_balanced_accuracy"] <= 1 for p in plain["points"] + balanced["points"])
    lines = describe(advise(feature_set, log=lambda *_: None)).splitlines()
    assert any(line.startswith("  learning curve (softmax (balanced) on block7): ") and "validation balanced accuracy" in line
               for line in lines), lines
    swept = {"best_layer": "block7", "balanced": True}
    target = tasks.SetTarget("imbalanced", feature_set.backbone_version, store, feature_set.version)
    assert tasks.curve_on_best_layer(target, swept, log=lambda *_: None)["saved_to"].endswith("-block7-balanced.json")
