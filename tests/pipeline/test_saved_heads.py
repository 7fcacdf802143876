"""A set's saved heads, as ``tlfs describe`` lists them: each with its accuracies and
views, the version it was fitted on where a newer one has come since, and the classifier
shipped beside it; and every set's heads side by side (``tlfs heads``), each dataset's best
chosen by validation accuracy among the heads of its sets' newest versions."""

import json
from pathlib import Path

import pytest

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier
from tlfs.pipeline.fit import fit
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.saved_heads import BOARD_COLUMNS, default_head, head_board, head_summaries, preferred_head, saved_heads
from tests.conftest import folder_images, scene_images, write_tree
from tests.extraction import run_extract

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, lite0, models_root):
    """A set whose version 1 has a softmax head (shipped as a classifier) and version 2 a
    LightGBM head: its store, the softmax head's figures and version 2."""
    tmp_path = tmp_path_factory.mktemp("heads")
    files = folder_images(per_class=4)
    source = write_tree(tmp_path / "images", files)
    store = str(tmp_path / "store")
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    first = features.open_set("colors", "efficientnet_lite0", store=store)
    softmax = fit(first, ["head"], "softmax", **QUIET)
    export_classifier(ClassifierRequest("colors", "efficientnet_lite0", "softmax-head", store=store), **QUIET)
    write_tree(source, {"train/red/new.png": files["train/red/001.png"]})  # one more image: version 2
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    second = features.open_set("colors", "efficientnet_lite0", store=store)
    fit(second, ["block14"], "lightgbm", **QUIET)
    assert second.version == 2 and saved_heads(second.uri) == ["lightgbm-block14", "softmax-head"]
    return store, softmax, second


def test_describe_lists_each_head_the_version_it_was_fitted_on_and_its_classifier(two_versions, capsys):
    store, softmax, second = two_versions
    assert main(["describe", "--dataset", "colors", "--store", store]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("head ")]
    assert len(lines) == 2 and lines[0].startswith("head          lightgbm-block14")
    assert "fitted on version" not in lines[0] and "classifier.onnx" not in lines[0]
    assert f"test {softmax['test_accuracy']:.4f}" in lines[1] and "views original" in lines[1]
    assert "(fitted on version 1)" in lines[1] and "classifier.onnx" in lines[1]
    assert main(["describe", "--dataset", "colors", "--store", store, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["heads"] == head_summaries(second.uri)
    shipped = {h["name"]: h["classifier_bytes"] for h in described["heads"]}
    assert shipped["lightgbm-block14"] is None and shipped["softmax-head"] > 1_000_000


def plant_validation(set_uri: str, head: str, accuracy: float, log_loss: float | None = None) -> None:
    """Set a saved head's recorded validation accuracy, and its log-loss where given (the board
    reads what ``fit`` recorded)."""
    path = Path(set_uri) / "_heads" / head / "metrics.json"
    planted = {"validation_accuracy": accuracy, **({"validation_log_loss": log_loss} if log_loss is not None else {})}
    path.write_text(json.dumps({**json.loads(path.read_text()), **planted}))


def test_heads_lists_every_sets_heads_by_validation_accuracy_and_the_best_of_each_dataset(two_versions, tmp_path,
                                                                                          models_root, capsys):
    store, _, second = two_versions
    source = write_tree(tmp_path / "scenes", scene_images(per_class=4))
    run_extract("scenes", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    scenes = features.open_set("scenes", "efficientnet_lite0", store=store)
    for layers, kind in ((["head"], "softmax"), (["block7"], "softmax"), (["head"], "mlp")):
        fit(scenes, layers, kind, **QUIET)
    for uri, head, accuracy in ((second.uri, "softmax-head", 0.9), (second.uri, "lightgbm-block14", 0.7),
                                (scenes.uri, "softmax-block7", 0.8), (scenes.uri, "softmax-head", 0.8),
                                (scenes.uri, "mlp-head", 0.8)):
        plant_validation(uri, head, accuracy)

    board = head_board(store)
    assert list(board.columns) == BOARD_COLUMNS
    assert list(zip(board["dataset"], board["name"])) == [
        ("colors", "softmax-head"), ("colors", "lightgbm-block14"),  # by validation accuracy, highest first
        ("scenes", "softmax-block7"), ("scenes", "softmax-head"), ("scenes", "mlp-head")]  # equals: the simpler head, the name
    assert list(board["current"]) == [False, True, True, True, True]
    assert list(board["best"]) == [False, True, True, False, False]  # a head of an older version is never the best
    recorded = {(d, h): json.loads((Path(u) / "_heads" / h / "metrics.json").read_text())["calibration_error"]
                for d, u in (("colors", second.uri), ("scenes", scenes.uri)) for h in saved_heads(u)}
    assert list(board["calibration_error"]) == [recorded[(d, h)] for d, h in zip(board["dataset"], board["name"])]
    assert list(head_board(store, "scenes")["name"]) == ["softmax-block7", "softmax-head", "mlp-head"]
    with pytest.raises(PipelineError, match="no committed feature set of 'guitars' in the store; it has colors, scenes"):
        head_board(store, "guitars")

    assert main(["heads", "--store", store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["dataset", "backbone", "version", "head", "validation", "test", "balanced", "calibration", "views"]
    assert [line.split()[2] for line in out[1:-1] if line.endswith("<- best (by validation)")] == [
        "lightgbm-block14", "softmax-block7"]
    assert "(fitted on version 1)" in out[1] and "classifier.onnx" in out[1] and "0.9000" in out[1]
    summary = json.loads(out[-1])
    assert summary["heads"] == 5 and summary["best"]["scenes"]["head"] == "softmax-block7"
    assert summary["best"]["colors"] == {"backbone_version": second.backbone_version, "head": "lightgbm-block14",
                                         "validation_accuracy": 0.7, "test_accuracy": board.loc[1, "test_accuracy"]}


def test_the_default_head_is_the_one_the_board_marks_best(two_versions):
    store, _, second = two_versions
    plant_validation(second.uri, "softmax-head", 0.95)  # better, but fitted on version 1
    assert default_head(second) == "lightgbm-block14"  # of the newest version's heads, the board's best
    board = head_board(store, "colors")
    assert board.loc[board["best"], "name"].tolist() == ["lightgbm-block14"]


def summary(name: str, head: str, layers: list[str], validation: float | None, plan: str = "new",
            balanced: bool = False, balanced_validation: float | None = None) -> dict:
    return {"name": name, "head": head, "layers": layers, "validation_accuracy": validation, "plan_id": plan,
            "balanced": balanced, "validation_balanced_accuracy": balanced_validation}


LAYERS = ["block2", "block15", "head"]


@pytest.mark.parametrize("summaries, balanced, chosen", [
    ([summary("softmax-head", "softmax", ["head"], 0.8), summary("mlp-block15", "mlp", ["block15"], 0.9)], False,
     "mlp-block15"),  # the best validation accuracy
    ([summary("mlp-head", "mlp", ["head"], 0.9), summary("softmax-head", "softmax", ["head"], 0.9)], False,
     "softmax-head"),  # of equals the simpler head
    ([summary("softmax-head", "softmax", ["head"], 0.9), summary("softmax-block2", "softmax", ["block2"], 0.9)], False,
     "softmax-block2"),  # then the earlier layer, as the sweep chooses
    ([summary("softmax-head", "softmax", ["head"], 0.99, plan="old"), summary("mlp-head", "mlp", ["head"], 0.5)], False,
     "mlp-head"),  # a head of the newest version before any older one
    ([summary("softmax-head", "softmax", ["head"], 0.99, plan="old")], False, "softmax-head"),  # else an older one
    ([summary("softmax-head", "softmax", ["head"], None), summary("mlp-head", "mlp", ["head"], 0.1)], False,
     "mlp-head"),  # a head without a validation accuracy last
    ([summary("softmax-head", "softmax", ["head"], 0.9),
      summary("softmax-head-balanced", "softmax", ["head"], 0.7, balanced=True, balanced_validation=0.8),
      summary("mlp-head-balanced", "mlp", ["head"], 0.9, balanced=True, balanced_validation=0.6)], True,
     "softmax-head-balanced"),  # after a balanced sweep, balanced heads by their balanced accuracy
    ([summary("softmax-head", "softmax", ["head"], 0.9),
      summary("softmax-head-balanced", "softmax", ["head"], 0.95, balanced=True, balanced_validation=0.95)], False,
     "softmax-head"),  # otherwise plain heads first
    ([summary("softmax-head-balanced", "softmax", ["head"], 0.9, balanced=True, balanced_validation=0.8)], False,
     "softmax-head-balanced"),  # or a balanced one where there is no other
    ([], False, None),
])
def test_the_preferred_head(summaries, balanced, chosen):
    assert preferred_head(summaries, "new", LAYERS, balanced=balanced) == chosen


def test_heads_of_equal_accuracy_are_listed_surest_then_shallow_layers_first(tmp_path, models_root, lite0):
    source = write_tree(tmp_path / "images", folder_images(per_class=2))
    store = str(tmp_path / "store")
    run_extract("ties", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    ties = features.open_set("ties", "efficientnet_lite0", store=store)
    for layer in ("head", "block10", "block7"):
        fit(ties, [layer], "softmax", **QUIET)
        plant_validation(ties.uri, f"softmax-{layer}", 0.5, log_loss=0.7)
    assert saved_heads(ties.uri) == ["softmax-block7", "softmax-block10", "softmax-head"]  # not block10 before block7
    assert list(head_board(store)["name"]) == ["softmax-block7", "softmax-block10", "softmax-head"]
    assert default_head(ties) == "softmax-block7"
    plant_validation(ties.uri, "softmax-head", 0.5, log_loss=0.3)  # as sure of the validation labels as none other
    assert list(head_board(store)["name"]) == ["softmax-head", "softmax-block7", "softmax-block10"]
    assert default_head(ties) == "softmax-head"


def test_a_store_whose_sets_hold_no_head_yet_has_an_empty_board(tmp_path, models_root, lite0, capsys):
    source = write_tree(tmp_path / "images", folder_images(per_class=2))
    store = str(tmp_path / "store")
    run_extract("bare", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    board = head_board(store)
    assert board.empty and list(board.columns) == BOARD_COLUMNS
    assert main(["heads", "--store", store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"no saved heads in {store} (tlfs sweep or tlfs fit saves them)"
    assert json.loads(out[-1]) == {"heads": 0, "best": {}}
