import json

import numpy as np

import pytest

from tlfs import features
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import confidence, fit, sweep
from tests.conftest import folder_images, write_tree
from tests.extraction import run_extract


@pytest.fixture
def colors_set(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "d", folder_images(per_class=8))
    store = str(tmp_path / "store")
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, shard_size=50,
                show_progress=False, log=lambda *_: None)
    return features.open_set("colors", "efficientnet_lite0", store=store)


def test_fit_saves_head_metrics_and_confusion_plot(colors_set, tmp_path):
    result = fit(colors_set, ["head"], "softmax", log=lambda *_: None)
    assert result["test_accuracy"] >= 0.9  # three flat colours: trivially separable
    folder = tmp_path / "store" / "colors" / result["backbone_version"] / "_heads" / "softmax-head"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {"blue", "green", "red"}
    assert len(metrics["confusion_matrix"]) == 3 and (folder / "confusion.png").stat().st_size > 1000
    assert (folder / "softmax.npz").exists()


def test_fit_on_concatenated_layers(colors_set):
    result = fit(colors_set, ["block2", "block15"], "softmax", log=lambda *_: None)
    assert result["dims"] == 24 + 320


def test_fit_on_all_layers_names_them(colors_set):
    result = fit(colors_set, ["all"], "mlp", log=lambda *_: None)
    assert result["layers"] == ["block2", "block4", "block7", "block10", "block14", "block15", "head"]
    assert result["dims"] == 24 + 40 + 80 + 112 + 192 + 320 + 1280 and result["params"]["one_cycle_epochs"] == 12
    assert result["params"]["power"] == 0.5  # the several-layer settings


def test_sweep_reports_every_layer_and_chooses_the_best_by_validation_not_test(colors_set, tmp_path):
    summary = sweep(colors_set, log=lambda *_: None)
    taps = ["block2", "block4", "block7", "block10", "block14", "block15", "head"]
    assert list(summary["layers"]) == taps and list(summary["validation"]) == taps
    best = summary["best_layer"]
    assert summary["chosen_by"] == "validation_accuracy"
    assert summary["validation"][best] == max(summary["validation"].values())
    tied = [t for t in taps if summary["validation"][t] == summary["validation"][best]]
    losses = summary["validation_log_loss"]
    assert best == min(tied, key=lambda t: (losses[t], taps.index(t)))  # among equals the surest, then the earliest
    assert all(0 < losses[t] < 20 for t in taps)
    assert summary["test_accuracy"] == summary["layers"][best]
    saved = tmp_path / "store" / "colors" / summary["backbone_version"] / "_heads"
    assert json.loads((saved / "sweep.json").read_text())["validation"] == summary["validation"]
    assert (saved / "sweep.png").exists()


def test_the_best_layer_is_chosen_on_validation_accuracy_among_equals_by_log_loss_then_the_earliest():
    from tlfs.pipeline.fit import best_layer

    assert best_layer({"block2": 0.5, "block15": 0.8, "head": 0.7}) == "block15"
    assert best_layer({"block2": 0.5, "block15": 0.8, "head": 0.8}) == "block15"
    # a tie of accuracies (ten validation images score in steps of 0.1) goes to the surer head
    ties = {"block2": 0.5, "block15": 0.5, "head": 0.5}
    assert best_layer(ties, {"block2": 0.69, "block15": 0.41, "head": 0.52}) == "block15"
    assert best_layer(ties, {"block2": 0.69, "block15": 0.69, "head": 0.69}) == "block2"  # then the earliest
    assert best_layer(ties, {"block2": 0.69, "block15": 0.0, "head": 0.52}) == "block15"  # a sure head's 0 counts
    assert best_layer({"block2": 0.9, "head": 0.5}, {"block2": 2.0, "head": 0.1}) == "block2"  # accuracy first


def test_a_heads_confidence_figures_are_the_share_and_accuracy_at_each_probability_and_its_calibration_gap():
    probability = np.array([0.3, 0.55, 0.75, 0.92, 0.96, 0.995, 0.999, 0.6])
    correct = np.array([False, True, False, True, True, True, False, True])
    figures = confidence(probability, correct)
    assert figures["at_probability"]["0.5"] == {"share": 7 / 8, "accuracy": round(5 / 7, 4)}
    assert figures["at_probability"]["0.9"] == {"share": 4 / 8, "accuracy": 3 / 4}
    assert figures["at_probability"]["0.99"] == {"share": 2 / 8, "accuracy": 1 / 2}
    # 15 bins of probability: each image alone in its bin but 0.96, 0.995 and 0.999 (the last bin: 2 of 3 right)
    gaps = [0.3, 1 - 0.55, 0.75, 1 - 0.6, 1 - 0.92] + [3 * abs(2 / 3 - (0.96 + 0.995 + 0.999) / 3)]
    assert figures["calibration_error"] == pytest.approx(sum(gaps) / 8, abs=1e-4)
    assert confidence(np.array([0.4]), np.array([True]))["at_probability"]["0.9"] == {"share": 0.0, "accuracy": None}


def test_fit_needs_train_and_test(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "d", folder_images(splits=("train",)))
    run_extract("c", [str(source)], "efficientnet_lite0", str(tmp_path / "s"), models_root, show_progress=False, log=lambda *_: None)
    with pytest.raises(PipelineError, match=r"needs a train and a test split to fit a head; it has train \(a source "
                                            r"given as URI#holdout=0.2 holds a test split out of its train images\)"):
        fit(features.open_set("c", "efficientnet_lite0", store=str(tmp_path / "s")), ["head"], "softmax")


def test_a_head_needs_two_classes_and_a_test_class_no_training_image_has_is_named(tmp_path, lite0, models_root):
    """One class is nothing to tell apart (LightGBM failed on it, the softmax scored 1.0); a
    class only the test split has is one no head predicts, and is said so before the fit."""
    files = folder_images(per_class=6)
    one_class = {k: v for k, v in files.items() if k.split("/")[1] == "red"}
    test_only = {k: v for k, v in files.items() if not k.startswith("train/blue/")}
    store, quiet = str(tmp_path / "s"), {"show_progress": False, "log": lambda *_: None}
    run_extract("one", [str(write_tree(tmp_path / "one", one_class))], "efficientnet_lite0", store, models_root, **quiet)
    run_extract("unseen", [str(write_tree(tmp_path / "unseen", test_only))], "efficientnet_lite0", store, models_root, **quiet)
    one = features.open_set("one", "efficientnet_lite0", store=store)
    for head in ("softmax", "lightgbm", "mlp"):
        with pytest.raises(PipelineError, match=r"the 6 training images are all of one class: a head tells two or more"):
            fit(one, ["head"], head, log=lambda *_: None)
    with pytest.raises(PipelineError, match="all of one class"):
        sweep(one, log=lambda *_: None)
    said = []
    result = fit(features.open_set("unseen", "efficientnet_lite0", store=store), ["head"], "softmax", log=said.append)
    assert "  no training image of blue: no head predicts it, so the 6 test images of it count as wrong" in said
    assert result["per_class_accuracy"]["blue"] == 0.0


def test_a_head_fits_on_a_tree_of_classes_given_with_a_holdout(tmp_path, lite0, models_root):
    """The folder of class folders most users have: extracted with a test split held out of
    it, a head fits at once and is tested on the held-out images."""
    files = {name.split("/", 1)[1]: data for name, data in folder_images(per_class=10, splits=("train",)).items()}
    source = f"{write_tree(tmp_path / 'colors', files)}#holdout=0.3"
    run_extract("c", [source], "efficientnet_lite0", str(tmp_path / "s"), models_root, show_progress=False,
                log=lambda *_: None)
    feature_set = features.open_set("c", "efficientnet_lite0", store=str(tmp_path / "s"))
    test_rows = feature_set.manifest["counts"]["test"]["written"]
    assert feature_set.splits == ["test", "train"] and 0 < test_rows < 30
    result = fit(feature_set, ["head"], "softmax")
    assert result["n_test"] == test_rows
    assert result["test_accuracy"] >= 0.5  # three flat colours: the held-out images are told apart


def test_heads_on_the_best_layer_reuse_the_sweeps_softmax_head(colors_set, tmp_path):
    from tlfs.pipeline import tasks

    store = str(tmp_path / "store")
    target = tasks.SetTarget("colors", "efficientnet_lite0", store)
    swept = tasks.sweep_layers(target, log=lambda *_: None)
    assert swept["best_head"]["layers"] == [swept["best_layer"]] and swept["best_head"]["head"] == "softmax"
    saved = tmp_path / "store" / "colors" / colors_set.backbone_version / "_heads" / f"softmax-{swept['best_layer']}" / "metrics.json"
    before = saved.stat().st_mtime_ns
    said = []
    results = tasks.heads_on_best_layer(target, swept, ["softmax", "mlp"], log=said.append)
    assert [r["head"] for r in results] == ["softmax", "mlp"] and results[0] == swept["best_head"]
    assert saved.stat().st_mtime_ns == before and any("the sweep's head" in line for line in said)  # not fitted twice


def test_the_sweep_never_chooses_on_the_test_split(colors_set, monkeypatch):
    # three flat colours score alike on every layer: plant scores that disagree, on the real fits
    from tlfs.pipeline import fit as fitting

    real = fitting._fit_and_save
    planted = {"block14": (0.9, 0.5), "head": (0.6, 0.99)}  # layer: (validation, test)

    def planted_scores(feature_set, layers, *rest, **named):
        validation, test = planted.get(layers[0], (0.1, 0.1))
        return {**real(feature_set, layers, *rest, **named), "validation_accuracy": validation, "test_accuracy": test,
                "validation_balanced_accuracy": validation, "test_balanced_accuracy": test}

    monkeypatch.setattr(fitting, "_fit_and_save", planted_scores)
    summary = sweep(colors_set, log=lambda *_: None)
    assert summary["best_layer"] == "block14" and summary["test_accuracy"] == 0.5  # head's 0.99 is never looked at
    assert summary["best_head"]["layers"] == ["block14"]
    balanced = sweep(colors_set, log=lambda *_: None, balanced=True)  # nor the balanced accuracy of the test split
    assert balanced["best_layer"] == "block14" and balanced["chosen_by"] == "validation_balanced_accuracy"


def test_the_commonest_mistakes_of_a_confusion_matrix_come_first_ties_in_the_classes_order():
    from tlfs.pipeline.fit import frequent_confusions

    matrix = [[5, 2, 0], [3, 4, 2], [0, 2, 9]]  # rows: the true class
    assert frequent_confusions(matrix, 3) == [(3, 1, 0), (2, 0, 1), (2, 1, 2)]
    assert frequent_confusions(matrix, 10)[-1] == (2, 2, 1) and frequent_confusions([[4, 0], [0, 4]], 3) == []


@pytest.mark.parametrize("classes, size", [(10, (770, 726)), (200, (1320, 1276))])
def test_a_confusion_matrix_of_many_classes_stays_a_figure_of_bounded_size(tmp_path, classes, size):
    """0.6 inch a class drew 200 classes (a bird dataset's) as 13,200 pixels a side, in 82 s
    and 8.6 GB; the figure now grows with the classes only up to CONFUSION_INCHES."""
    from PIL import Image

    from tlfs.pipeline.fit import confusion_png

    matrix = (np.eye(classes, dtype=int) * 5 + 1).tolist()
    path = confusion_png(tmp_path / "c.png", matrix, [f"class {k}" for k in range(classes)], "a title")
    assert Image.open(path).size == size
