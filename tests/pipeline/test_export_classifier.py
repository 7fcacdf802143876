"""``tlfs export-classifier``: a saved head and its backbone as one ONNX file that
onnxruntime runs alone, classifying every image as ``tlfs predict`` does."""

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tlfs.models.errors import ModelError
from tlfs.models.standalone_classifier import standalone_classifier
from tlfs.pipeline import export_classifier as exporting
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier
from tlfs.pipeline.fit import fit, sweep
from tlfs.pipeline.predict import PredictRequest, predict

QUIET = {"log": lambda *_: None}


def run_alone(path: str, images: list) -> tuple[np.ndarray, np.ndarray, dict]:
    """The classifier at ``path`` on ``images`` (files), as a deployment runs it: Pillow's
    pixels, onnxruntime; its probabilities, labels and metadata."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = np.stack([np.asarray(Image.open(image).convert("RGB")) for image in images])
    probabilities, labels = session.run(None, {"images": batch})
    return probabilities, labels, session.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize("kind, layers, views", [("softmax", ["head"], ["original"]), ("lightgbm", ["block15"], ["original"]),
                                                 ("mlp", ["block14", "head"], ["original", "flip"])])
def test_the_classifier_alone_gives_predicts_classes_and_the_heads_test_accuracy(noisy_set, tmp_path, kind, layers, views):
    feature_set, source, store = noisy_set
    result = fit(feature_set, layers, kind, views=views, **QUIET)
    name = result["saved_to"].rstrip("/").rsplit("/", 1)[-1]
    output = str(tmp_path / "classifier.onnx")
    exported = export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", name, output, store), **QUIET)
    _, labels, ids = feature_set.matrices(layers, "test")
    images = [source / i for i in ids]
    probabilities, predicted, meta = run_alone(output, images)
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", tuple(map(str, images)), name, store), **QUIET)
    classes = json.loads(meta["tlfs.classes"])
    assert [classes[k] for k in predicted] == [p.label for p in predictions]
    np.testing.assert_allclose(probabilities.max(1), [p.probability for p in predictions], atol=exporting.TOLERANCE)
    assert np.mean(predicted == labels) == pytest.approx(result["test_accuracy"])
    assert probabilities.shape == (len(images), 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert json.loads(meta["tlfs.layers"]) == layers and json.loads(meta["tlfs.views"]) == views
    assert exported["parity"]["images"] > 0 and exported["parity"]["max_difference"] <= exporting.TOLERANCE
    assert exported["test_accuracy"] == result["test_accuracy"] and exported["head"] == name


def test_photos_decoded_by_the_scripts_recipe_are_classified_as_predict_does(noisy_set, tmp_path):
    """Photo-sized JPEGs (one over twice the input, one turned by its EXIF orientation),
    decoded with Pillow alone as ``scripts/onnx-classifier-accuracy.py`` shows a deployment
    doing it: the classifier gives predict's classes and probabilities."""
    import importlib.util

    from tlfs.models import sample_images

    feature_set, _, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    output = str(tmp_path / "classifier.onnx")
    export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", "softmax-head", output, store), **QUIET)
    files = []
    for number, name in enumerate(sample_images.PHOTOS):
        image = Image.fromarray(sample_images.photo(name)).resize((600, 450) if number % 2 else (300, 240))
        exif = Image.Exif()
        exif[0x0112] = 6 if number == 1 else 1  # one stored on its side, to be turned upright
        files.append(tmp_path / f"{name}.jpg")
        image.save(files[-1], "JPEG", quality=90, exif=exif)
    spec = importlib.util.spec_from_file_location("recipe", exporting_script())
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["tlfs.classes"])
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", tuple(map(str, files)), "softmax-head", store),
                          **QUIET)
    for path, expected in zip(files, predictions):
        probabilities, label = session.run(None, {"images": recipe.load(path, 224)[None]})
        assert classes[label[0]] == expected.label
        assert abs(probabilities[0].max() - expected.probability) <= exporting.TOLERANCE


def exporting_script():
    from tests.conftest import REPO

    return REPO / "scripts" / "onnx-classifier-accuracy.py"


def test_without_a_head_or_a_place_the_sweeps_best_goes_beside_the_head(noisy_set):
    feature_set, source, store = noisy_set
    best = sweep(feature_set, **QUIET)["best_layer"]
    said = []
    exported = export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", store=store), log=said.append)
    assert exported["head"] == f"softmax-{best}"
    assert exported["output"] == f"{feature_set.uri}/_heads/softmax-{best}/classifier.onnx"
    assert said[0].startswith(f"softmax-{best} of {feature_set.uri} ({best}, views original+flip")
    assert "the same classes" in said[0]
    _, _, meta = run_alone(exported["output"], [source / "test/red/000.png"])
    assert meta["tlfs.head"] == f"softmax-{best}" and meta["tlfs.backbone_version"] == feature_set.backbone_version
    assert "uint8 [batch, height, width, 3]" in meta["tlfs.summary"]


def test_a_graph_that_disagrees_with_predict_is_not_written(noisy_set, tmp_path, monkeypatch):
    feature_set, _, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    monkeypatch.setattr(exporting, "TOLERANCE", -1.0)  # any difference at all is too much
    output = tmp_path / "classifier.onnx"
    with pytest.raises(PipelineError, match=r"the softmax-head classifier's graph disagrees with tlfs predict .*not written"):
        export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", "softmax-head", str(output), store), **QUIET)
    assert not output.exists()


def test_the_command_names_a_missing_head_and_writes_one_that_is_there(noisy_set, tmp_path, capsys):
    feature_set, _, store = noisy_set
    fit(feature_set, ["block7"], "softmax", **QUIET)
    assert main(["export-classifier", "--dataset", "noisy", "--head", "mlp-block2", "--store", store]) == 1
    assert "no head 'mlp-block2'" in capsys.readouterr().err
    output = tmp_path / "deploy" / "noisy.onnx"
    assert main(["export-classifier", "--dataset", "noisy", "--head", "softmax-block7", "--output", str(output),
                 "--store", store]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == str(output) and output.stat().st_size == summary["bytes"]
    assert summary["classes"] == feature_set.classes and summary["layers"] == ["block7"]


def test_only_views_the_graph_computes_and_layers_the_backbone_has(lite0):
    from tlfs.models.session import local_onnx

    with pytest.raises(ModelError, match="a classifier graph computes original, flip"):
        standalone_classifier(local_onnx(lite0), ["head"], ["original", "rotate"], None, {})
    with pytest.raises(ModelError, match="has no output block99"):
        standalone_classifier(local_onnx(lite0), ["block99"], ["original"], None, {})


def test_a_scheduled_fit_ships_the_head_of_the_best_validation_accuracy(noisy_set):
    from tlfs.pipeline import tasks

    feature_set, _, store = noisy_set
    fitted = [fit(feature_set, ["block15"], kind, **QUIET) for kind in ("softmax", "mlp")]
    target = tasks.SetTarget("noisy", feature_set.backbone_version, store, feature_set.version)
    planted = [{**fitted[0], "validation_accuracy": 0.5}, {**fitted[1], "validation_accuracy": 0.7}]
    said = []
    shipped = tasks.ship_best_head(target, planted, log=said.append)
    assert shipped["head"] == "mlp-block15" and shipped["output"].endswith("/_heads/mlp-block15/classifier.onnx")
    assert said[0].startswith("shipping mlp-block15 (validation accuracy 0.7000, the best of softmax, mlp)")
    equal = [{**fitted[0], "validation_accuracy": 0.7}, {**fitted[1], "validation_accuracy": 0.7}]
    assert tasks.ship_best_head(target, equal, **QUIET)["head"] == "softmax-block15"  # the first of equals
    with pytest.raises(PipelineError, match="no head was fitted: nothing to ship"):
        tasks.ship_best_head(target, [], **QUIET)


@pytest.mark.parametrize("layers, views", [(["head"], ["original"]), (["block14", "head"], ["original", "flip"])])
def test_with_unfamiliar_the_classifier_alone_says_what_predict_unfamiliar_says(noisy_set, tmp_path, layers, views):
    from tests.pipeline.test_familiarity import foreign_images

    feature_set, source, store = noisy_set
    name = fit(feature_set, layers, "softmax", views=views, **QUIET)["saved_to"].rstrip("/").rsplit("/", 1)[-1]
    output = str(tmp_path / "classifier.onnx")
    exported = export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", name, output, store, unfamiliar=True,
                                                   neighbours=3), **QUIET)
    images = [source / i for i in feature_set.matrix("head", "test")[2]] + foreign_images(tmp_path / "foreign")
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    batch = np.stack([np.asarray(Image.open(image).convert("RGB")) for image in images])
    probabilities, labels, similarity, familiar = session.run(None, {"images": batch})
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", tuple(map(str, images)), name, store,
                                         unfamiliar=True, neighbours=3), **QUIET)
    np.testing.assert_allclose(similarity, [p.similarity for p in predictions], atol=exporting.TOLERANCE)
    assert familiar.tolist() == [p.familiar for p in predictions]
    assert familiar[-4:].tolist() == [False] * 4 and familiar[:-4].mean() > 0.8  # the foreign patterns, the set's own
    np.testing.assert_allclose(probabilities.max(1), [p.probability for p in predictions], atol=exporting.TOLERANCE)
    meta = session.get_modelmeta().custom_metadata_map
    assert float(meta["tlfs.familiar_threshold"]) == pytest.approx(exported["familiarity"]["threshold"], abs=1e-6)
    assert meta["tlfs.neighbours"] == "3" and "'familiar' bool [batch]" in meta["tlfs.summary"]
    assert exported["outputs"]["familiar"] == "bool [batch]" and exported["familiarity"]["training_images"] == 36


def test_without_unfamiliar_the_classifier_has_its_two_outputs_and_no_training_features(noisy_set, tmp_path):
    feature_set, _, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    plain, with_familiarity = str(tmp_path / "plain.onnx"), str(tmp_path / "familiar.onnx")
    export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", "softmax-head", plain, store), **QUIET)
    export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", "softmax-head", with_familiarity, store,
                                        unfamiliar=True), **QUIET)
    outputs = lambda path: [o.name for o in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_outputs()]
    assert outputs(plain) == ["probabilities", "label"]
    assert outputs(with_familiarity) == ["probabilities", "label", "similarity", "familiar"]
    assert os.path.getsize(with_familiarity) - os.path.getsize(plain) >= 36 * 1280 * 4  # the training features, float32


def test_a_similarity_that_disagrees_with_predict_is_not_written(noisy_set, tmp_path, monkeypatch):
    feature_set, _, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    real = exporting.batch_scores

    def shifted(head, session, batch, familiarity):  # predict's similarities moved by 0.01: the graph no longer agrees
        scores = real(head, session, batch, familiarity)
        scores[:, -1] += 0.01 if familiarity is not None else 0.0
        return scores

    monkeypatch.setattr(exporting, "batch_scores", shifted)
    output = tmp_path / "classifier.onnx"
    with pytest.raises(PipelineError, match=r"probabilities and similarities 1.0e-02 apart\): not written"):
        export_classifier(ClassifierRequest("noisy", "efficientnet_lite0", "softmax-head", str(output), store,
                                            unfamiliar=True), **QUIET)
    assert not output.exists()


def test_an_int8_sets_classifier_holds_the_int8_graph_its_head_learnt_on(tmp_path, int8_models):
    """An int8 set's head was fitted on int8 features: the classifier shipped with it runs
    the int8 graph (a CPU's), and classifies as ``tlfs predict`` does on that set."""
    import onnx

    from tests.conftest import noisy_images, write_tree
    from tests.extraction import run_extract
    from tlfs import features

    source, store = write_tree(tmp_path / "images", noisy_images(per_class=6)), str(tmp_path / "store")
    run_extract("noisy8", [str(source)], "efficientnet_lite0", store, int8_models, layers=["head"], precision="int8",
                show_progress=False)
    feature_set = features.open_set("noisy8", "efficientnet_lite0", store=store)
    fit(feature_set, ["head"], "softmax", **QUIET)
    output = str(tmp_path / "classifier.onnx")
    exported = export_classifier(ClassifierRequest("noisy8", "efficientnet_lite0", "softmax-head", output, store), **QUIET)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(output).graph.node}
    _, _, ids = feature_set.matrices(["head"], "test")
    images = [source / i for i in ids]
    probabilities, predicted, meta = run_alone(output, images)
    predictions = predict(PredictRequest("noisy8", "efficientnet_lite0", tuple(map(str, images)), "softmax-head", store),
                          **QUIET)
    classes = json.loads(meta["tlfs.classes"])
    assert [classes[k] for k in predicted] == [p.label for p in predictions]
    np.testing.assert_allclose(probabilities.max(1), [p.probability for p in predictions], atol=exporting.TOLERANCE)
    assert exported["parity"]["max_difference"] <= exporting.TOLERANCE
