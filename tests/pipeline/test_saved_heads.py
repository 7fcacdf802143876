"""A set's saved heads, as ``tlfs describe`` lists them: each with its accuracies and
views, the version it was fitted on where a newer one has come since, and the classifier
shipped beside it."""

import json

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier
from tlfs.pipeline.fit import fit
from tlfs.pipeline.saved_heads import head_summaries, saved_heads
from tests.conftest import folder_images, write_tree
from tests.extraction import run_extract

QUIET = {"log": lambda *_: None}


def test_describe_lists_each_head_the_version_it_was_fitted_on_and_its_classifier(tmp_path, lite0, models_root, capsys):
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
