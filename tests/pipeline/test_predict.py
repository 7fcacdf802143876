"""``tlfs predict``: new images classified by a saved head, each the way the set's images
went, so that a head's predictions on its own test images are the ones it was scored by."""

import json

import numpy as np
import pandas as pd
import pytest

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import PREDICTIONS_FILE, fit, sweep
from tlfs.pipeline.predict import PREDICTION_COLUMNS, PredictRequest, predict, write_predictions
from tlfs.pipeline.saved_heads import load_head
from tests.conftest import noisy_images, write_tree
from tests.extraction import run_extract


@pytest.mark.parametrize("kind, layers, views", [("softmax", ["head"], ["original"]), ("lightgbm", ["block15"], ["original"]),
                                                 ("mlp", ["head"], ["original"]),
                                                 ("softmax", ["block14", "head"], ["original", "flip"])])
def test_a_heads_predictions_on_its_test_images_are_the_ones_it_was_scored_by(noisy_set, kind, layers, views):
    feature_set, source, store = noisy_set
    result = fit(feature_set, layers, kind, log=lambda *_: None, views=views)
    name = result["saved_to"].rstrip("/").rsplit("/", 1)[-1]
    _, labels, ids = feature_set.matrices(layers, "test")
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", tuple(str(source / i) for i in ids), name, store),
                          log=lambda *_: None)
    head = load_head(feature_set, name)
    stored = sum(head.predict_proba(feature_set.matrices(layers, "test", view=view)[0]) for view in views) / len(views)
    assert [p.label for p in predictions] == [head.classes[k] for k in stored.argmax(1)]
    np.testing.assert_allclose([p.probability for p in predictions], stored.max(1), rtol=1e-4)
    accuracy = np.mean([p.label == feature_set.classes[y] for p, y in zip(predictions, labels)])
    assert accuracy == pytest.approx(result["test_accuracy"])
    saved = pd.read_parquet(f"{result['saved_to']}/{PREDICTIONS_FILE}")  # fit's own, beside the head: the same
    assert list(saved["image_id"]) == list(ids) and list(saved["predicted"]) == [p.label for p in predictions]
    assert list(saved["label_name"]) == [feature_set.classes[y] for y in labels]
    np.testing.assert_allclose(saved["probability"], stored.max(1), rtol=1e-5)
    assert saved["correct"].mean() == pytest.approx(result["test_accuracy"])
    sure = saved[saved["probability"] >= 0.7]
    assert result["at_probability"]["0.7"]["share"] == pytest.approx(len(sure) / len(saved), abs=1e-4)
    assert result["at_probability"]["0.7"]["accuracy"] == (pytest.approx(sure["correct"].mean(), abs=1e-4) if len(sure)
                                                           else None)
    assert 0.05 < stored.max(1).min() < 0.99 or kind != "softmax"  # the probabilities vary: a check that can fail


def test_an_image_that_cannot_be_decoded_has_a_reason_and_the_rest_are_classified(noisy_set, tmp_path):
    feature_set, source, store = noisy_set
    sweep(feature_set, log=lambda *_: None)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    images = (str(source / "test/red/000.png"), str(broken), str(source / "test/blue"))
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", images, None, store), log=lambda *_: None)
    assert [p.image for p in predictions] == [images[0], images[1]] + [str(source / f"test/blue/{i:03d}.png") for i in range(12)]
    assert predictions[1].label is None and predictions[1].reason == "not a recognised image format"
    assert all(p.label in feature_set.classes for p in predictions if p is not predictions[1])


def test_without_a_head_named_the_sweeps_best_layers_softmax_classifies(noisy_set, tmp_path):
    feature_set, source, store = noisy_set
    best = sweep(feature_set, log=lambda *_: None)["best_layer"]
    said = []
    predict(PredictRequest("noisy", "efficientnet_lite0", (str(source / "test/red/000.png"),), None, store), log=said.append)
    assert said[0].startswith(f"classifying 1 image with softmax-{best} ({best}, views original+flip) of {feature_set.uri}")


def test_a_head_that_was_not_fitted_is_told_with_the_saved_ones(noisy_set):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", log=lambda *_: None)
    with pytest.raises(PipelineError, match=r"no head 'mlp-block2' in .*; saved: .*softmax-head.* \(tlfs fit --dataset noisy"):
        predict(PredictRequest("noisy", "efficientnet_lite0", (str(source),), "mlp-block2", store), log=lambda *_: None)


def test_a_set_without_a_saved_head_says_how_to_fit_one_and_with_one_head_uses_it(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "images", noisy_images(per_class=2))
    store = str(tmp_path / "store")
    run_extract("fresh", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, log=lambda *_: None)
    request = PredictRequest("fresh", "efficientnet_lite0", (str(source / "test/red/000.png"),), None, store)
    with pytest.raises(PipelineError, match=r"has no saved head: `tlfs sweep --dataset fresh` fits a softmax head on "
                                            r"every layer, `tlfs fit --dataset fresh --layer LAYER"):
        predict(request, log=lambda *_: None)
    fit(features.open_set("fresh", "efficientnet_lite0", store=store), ["block15"], "mlp", log=lambda *_: None)
    said = []
    predict(request, log=said.append)  # no sweep needed: the one head there is
    assert said[0].startswith("classifying 1 image with mlp-block15 (block15")


def test_a_sets_model_is_found_where_its_lineage_says_else_in_the_models_folder_else_named_missing(
        tmp_path, lite0, monkeypatch):
    """A relative model URI read from another folder, or a store moved with its models: the same
    ONNX in TLFS_MODELS is used; where neither holds it, the error says where it looked."""
    import shutil

    source = write_tree(tmp_path / "images", noisy_images(per_class=2))
    store, models = str(tmp_path / "store"), str(tmp_path / "models")
    run_extract("lost", [str(source)], "efficientnet_lite0", store, models, show_progress=False, log=lambda *_: None)
    fit(features.open_set("lost", "efficientnet_lite0", store=store), ["head"], "softmax", log=lambda *_: None)
    request = PredictRequest("lost", "efficientnet_lite0", (str(source),), "softmax-head", store)
    expected = [p.label for p in predict(request, log=lambda *_: None)]
    shutil.move(models, tmp_path / "moved")
    monkeypatch.setenv("TLFS_MODELS", str(tmp_path / "moved"))
    assert [p.label for p in predict(request, log=lambda *_: None)] == expected
    card = next((tmp_path / "moved").rglob("model_card.json"))
    card.write_text(card.read_text().replace('"onnx_sha256": "', '"onnx_sha256": "0'))  # another ONNX of that name
    with pytest.raises(PipelineError, match=r"the model of .*lost.* is not where its lineage says, .*models/efficientnet"
                                            r".*, nor in .*moved \(TLFS_MODELS\): point TLFS_MODELS at the folder of "
                                            r"the exported models, or export efficientnet_lite0 again"):
        predict(request, log=lambda *_: None)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_predictions_are_written_as_a_table(tmp_path, suffix):
    from tlfs.pipeline.predict import Prediction

    rows = [Prediction("a.jpg", "red", 0.75, sure=False), Prediction("b.jpg", None, float("nan"), "empty file (0 bytes)")]
    path = str(tmp_path / f"out.{suffix}")
    write_predictions(rows, path)
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet, "jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](path)
    assert list(read["image"]) == ["a.jpg", "b.jpg"] and read["label"][0] == "red" and read["probability"][0] == 0.75
    assert read["reason"][1] == "empty file (0 bytes)" and not read["sure"][0] and list(read.columns) == PREDICTION_COLUMNS
    with pytest.raises(PipelineError, match=r"out.txt: write the table to a .csv, .parquet or .jsonl file"):
        write_predictions(rows, str(tmp_path / "out.txt"))


def test_tlfs_predict_prints_each_image_and_a_summary(noisy_set, capsys, tmp_path):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", log=lambda *_: None)
    assert main(["predict", "--dataset", "noisy", "--head", "softmax-head", "--store", store, str(source / "test/red")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 13 and lines[0].startswith(f"{source}/test/red/000.png\t")
    assert json.loads(lines[-1])["images"] == 12
    out = tmp_path / "p.csv"
    assert main(["predict", "--dataset", "noisy", "--head", "softmax-head", "--store", store, "--output", str(out),
                 str(source / "test")]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(out) and len(pd.read_csv(out)) == 36


def test_a_prediction_below_the_minimum_probability_is_marked_unsure(noisy_set, capsys):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", log=lambda *_: None)
    images = (str(source / "test/green"), str(source / "test/blue/000.png"))
    every = predict(PredictRequest("noisy", "efficientnet_lite0", images, "softmax-head", store), log=lambda *_: None)
    assert all(p.sure for p in every)  # no minimum: every prediction is sure
    middle = float(np.median([p.probability for p in every]))
    marked = predict(PredictRequest("noisy", "efficientnet_lite0", images, "softmax-head", store, min_probability=middle),
                     log=lambda *_: None)
    assert [p.sure for p in marked] == [p.probability >= middle for p in every]
    assert [(p.label, p.probability) for p in marked] == [(p.label, p.probability) for p in every]  # only marked
    assert 0 < sum(p.sure for p in marked) < len(marked)
    assert main(["predict", "--dataset", "noisy", "--head", "softmax-head", "--store", store, "--min-probability",
                 str(middle), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    unsure = [line.split("\t")[0] for line in lines[:-1] if line.endswith("\tunsure")]
    assert unsure == [p.image for p in marked if not p.sure] and json.loads(lines[-1])["unsure"] == len(unsure)
    with pytest.raises(PipelineError, match="min_probability 1.5: a probability from 0 to 1"):
        predict(PredictRequest("noisy", "efficientnet_lite0", images, "softmax-head", store, min_probability=1.5))
