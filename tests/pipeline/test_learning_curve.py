"""``tlfs learning-curve``: would more labelled images help? One head fitted on growing
shares of the training images, every smaller training set part of every larger one, each
scored on the same validation and test images; the whole split's point is what ``tlfs fit``
reports."""

import json

import fsspec
import numpy as np
import pytest

from tlfs.features import layout
from tlfs.features.storage import read_json_if_exists
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit
from tlfs.pipeline.learning_curve import (WORTH_A_DOUBLING, LearningCurveRequest, _class_order, _first_of_each_class,
                                          last_doubling_gain, learning_curve)

QUIET = {"log": lambda *_: None}


def test_each_share_takes_the_first_images_of_each_class_so_smaller_sets_are_part_of_larger_ones():
    y = np.repeat(np.arange(3), [40, 20, 10])
    pool = np.setdiff1d(np.arange(len(y)), [0, 45, 65])  # the validation images held out
    ordered = _class_order(y, pool)
    sets = [set(_first_of_each_class(ordered, y, share)) for share in (0.05, 0.25, 0.5, 1.0)]
    assert all(small <= large for small, large in zip(sets, sets[1:]))
    assert sets[-1] == set(pool) and not sets[-1] & {0, 45, 65}
    assert [int((y[list(sets[1])] == k).sum()) for k in range(3)] == [10, 5, 2]  # a quarter of 39, 19 and 9
    assert [int((y[list(sets[0])] == k).sum()) for k in range(3)] == [2, 1, 1]  # at least one of each class


def test_the_gain_of_a_doubling_is_the_slope_of_the_last_points_against_the_images_logarithm():
    points = [{"images": n, "validation_accuracy": a} for n, a in ((100, 0.50), (200, 0.60), (400, 0.65), (800, 0.70))]
    assert last_doubling_gain(points) == pytest.approx(0.05)  # the last three: +5 points a doubling
    assert last_doubling_gain(points, last=2) == pytest.approx(0.05)
    assert last_doubling_gain(points[:2]) == pytest.approx(0.10)
    flat = [{"images": n, "validation_accuracy": 0.8} for n in (250, 500, 1000)]
    assert last_doubling_gain(flat) == 0 and last_doubling_gain(flat[:1]) is None


def test_the_whole_splits_point_is_what_fit_reports_and_the_curve_is_saved_beside_the_heads(noisy_set):
    feature_set, _, store = noisy_set
    result = learning_curve(LearningCurveRequest("noisy", "efficientnet_lite0", ("block15",), shares=(0.25, 0.5, 1.0),
                                                 views=("original",), store=store), **QUIET)
    points = result["points"]
    assert [p["share"] for p in points] == [0.25, 0.5, 1.0]
    assert 7 <= points[0]["images"] <= 9 and 15 <= points[1]["images"] <= 17 and points[2]["images"] == 32  # of 36, 4 held out
    assert [p["per_class"] for p in points][-1] in (10, 11)
    fitted = fit(feature_set, ["block15"], "softmax", views=["original"], **QUIET)
    assert fitted["n_train"] == points[-1]["images"] and fitted["n_validation"] == result["validation_images"]
    assert (points[-1]["validation_accuracy"], points[-1]["test_accuracy"]) == (
        round(fitted["validation_accuracy"], 4), round(fitted["test_accuracy"], 4))
    saved = read_json_if_exists(result["saved_to"])
    assert saved["points"] == points and result["saved_to"].endswith("/_heads/learning_curve-softmax-block15.json")
    with fsspec.open(result["saved_to"][:-len(".json")] + ".png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["saved_to"].startswith(layout.heads_uri(feature_set.uri))


def test_the_command_prints_the_curve_and_what_a_doubling_adds(noisy_set, capsys):
    _, _, store = noisy_set
    assert main(["learning-curve", "--dataset", "noisy", "--store", store, "--shares", "0.5,1", "--head", "mlp"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mlp on head:") and len(out) == 5
    assert out[3].startswith("a doubling of the images last added ") and "points of validation accuracy" in out[3]
    summary = json.loads(out[-1])
    assert [p["share"] for p in summary["points"]] == [0.5, 1.0] and summary["head"] == "mlp"


def test_what_cannot_be_drawn_is_told(noisy_set):
    _, _, store = noisy_set

    def curve(**options):
        return learning_curve(LearningCurveRequest("noisy", "efficientnet_lite0", store=store, **options), **QUIET)

    with pytest.raises(PipelineError, match="shares 0, 1: each above 0 and at most 1"):
        curve(shares=(0, 1))
    with pytest.raises(PipelineError, match="has no layer 'block99'"):
        curve(layers=("block99",))
    with pytest.raises(PipelineError, match="has no 'rotated' view"):
        curve(views=("rotated",))


def test_the_advisor_shows_the_curves_of_this_version_as_evidence_and_leaves_out_another_versions(noisy_set, monkeypatch):
    from tlfs.features.storage import atomic_write_json
    from tlfs.pipeline.advise import advise, describe

    feature_set, _, store = noisy_set
    curve = learning_curve(LearningCurveRequest("noisy", "efficientnet_lite0", shares=(0.5, 1.0), store=store), **QUIET)
    other = {**read_json_if_exists(curve["saved_to"]), "plan_id": "an-older-plan", "head": "lightgbm"}
    atomic_write_json(curve["saved_to"].replace("softmax-head", "lightgbm-head"), other)
    advice = advise(feature_set, **QUIET)
    shown = [(c["head"], c["layers"]) for c in advice["learning_curves"]]  # with the other tests' curves of this set
    assert ("softmax", ["head"]) in shown and ("lightgbm", ["head"]) not in shown
    first, last = curve["points"]
    assert (f"  learning curve (softmax on head): {first['images']} -> {last['images']} training images, validation accuracy "
            f"{first['validation_accuracy']:.3f} -> {last['validation_accuracy']:.3f}; a doubling last added "
            f"{curve['last_doubling_gain'] * 100:+.1f} points"
            + (": more labels would still help (tlfs label-next --dataset noisy chooses which)"
               if curve["last_doubling_gain"] >= WORTH_A_DOUBLING else "")) in describe(advice).splitlines()
    # where a doubling still adds enough, the line names the command that chooses which images to label
    from tlfs.pipeline import learning_curve as curves

    for worth, named in ((-1.0, True), (1.0, False)):
        monkeypatch.setattr(curves, "WORTH_A_DOUBLING", worth)
        assert ("tlfs label-next --dataset noisy chooses which" in describe(advice)) is named


def test_with_no_layer_named_the_sweeps_best_layer_of_this_version_is_used_else_the_deepest(noisy_set):
    from tlfs.features.storage import atomic_write_json, fs_path
    from tlfs.pipeline.saved_heads import layers_to_use

    feature_set, _, _ = noisy_set
    assert layers_to_use(feature_set, ()) == ["head"] and layers_to_use(feature_set, ["all"]) == list(feature_set.layers)
    assert layers_to_use(feature_set, ["block7", "head"]) == ["block7", "head"]
    with pytest.raises(PipelineError, match="has no layer 'block99'; it has block2, .*head"):
        layers_to_use(feature_set, ["block99"])
    sweep = f"{layout.heads_uri(feature_set.uri)}/sweep.json"
    try:
        atomic_write_json(sweep, {"plan_id": feature_set.plan_id, "best_layer": "block14"})
        assert layers_to_use(feature_set, ()) == ["block14"]
        atomic_write_json(sweep, {"plan_id": "another-version", "best_layer": "block14"})
        assert layers_to_use(feature_set, ()) == ["head"]
    finally:
        fs, path = fs_path(sweep)
        fs.rm(path)


def test_repeated_draws_give_each_point_its_mean_and_spread_and_the_first_draw_is_the_single_curve(noisy_set, capsys):
    _, _, store = noisy_set
    request = {"layers": ("block15",), "shares": (0.25, 0.5, 1.0), "views": ("original",), "store": store}
    single = learning_curve(LearningCurveRequest("noisy", "efficientnet_lite0", **request), **QUIET)
    drawn = learning_curve(LearningCurveRequest("noisy", "efficientnet_lite0", repeats=3, **request), **QUIET)
    assert single["repeats"] == 1 and single["last_doubling_gain_std"] is None and "validation_std" not in single["points"][0]
    assert drawn["repeats"] == 3 and [p["images"] for p in drawn["points"]] == [p["images"] for p in single["points"]]
    whole, part = drawn["points"][-1], drawn["points"][0]
    assert whole["validation_std"] == 0 and whole["test_std"] == 0  # every draw takes the whole split: the same head
    assert (whole["validation_accuracy"], whole["test_accuracy"]) == (single["points"][-1]["validation_accuracy"],
                                                                       single["points"][-1]["test_accuracy"])
    assert part["validation_std"] >= 0 and drawn["last_doubling_gain_std"] is not None
    assert main(["learning-curve", "--dataset", "noisy", "--store", store, "--layer", "block15", "--shares", "0.5,1",
                 "--repeats", "2", "--views", "original"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert " ± " in out[1] and out[3].startswith("a doubling of the images last added ") and " ± " in out[3]
