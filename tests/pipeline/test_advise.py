import numpy as np
import pytest

from tlfs.pipeline.advise import Thresholds, decide, similarity_from_logits
from tests.extraction import run_extract

LAYERS = ["block2", "block4", "block7", "block10", "block14", "block15", "head"]


def test_similarity_is_zero_for_clueless_and_near_one_for_confident_predictions():
    assert similarity_from_logits(np.zeros((5, 1000)))["score"] == pytest.approx(0.0, abs=1e-9)
    confident = np.full((5, 1000), -20.0)
    confident[:, 3] = 20.0
    assert similarity_from_logits(confident)["score"] > 0.99


@pytest.mark.parametrize(
    "per_class,score,case,do",
    [
        (5000, 0.6, "large_similar", "fine_tune"),
        (5000, 0.1, "large_different", "fine_tune"),
        (30, 0.6, "small_similar", "linear_classifier"),
        (30, 0.1, "small_different", "linear_classifier"),
    ],
)
def test_the_four_cases(per_class, score, case, do):
    got, action = decide(per_class, score, Thresholds(1000, 0.35), None, LAYERS)
    assert got == case and action["do"] == do


def test_small_cases_take_the_layer_the_sweep_chose_or_fall_back():
    # the sweep chose by validation accuracy: the advisor takes its choice, not the best test figure
    sweep = {"layers": {"block7": 0.6, "block15": 0.81, "head": 0.80}, "validation": {"block7": 0.6, "block15": 0.79, "head": 0.82},
             "best_layer": "head"}
    similar = decide(30, 0.6, Thresholds(1000, 0.35), sweep, LAYERS)[1]
    assert similar["layer"] == "head" and "the sweep's best layer" in similar["why"]
    assert decide(30, 0.1, Thresholds(1000, 0.35), sweep, LAYERS)[1]["layer"] == "head"
    without = decide(30, 0.6, Thresholds(1000, 0.35), None, LAYERS)[1]
    assert without["layer"] == "head" and "run the sweep" in without["why"]
    assert decide(30, 0.1, Thresholds(1000, 0.35), None, LAYERS)[1]["layer"] == "block10"  # an earlier, generic layer


def test_the_advice_shows_the_sweeps_validation_and_test_accuracy():
    from tlfs.pipeline.advise import describe

    result = {"case": "small_similar", "sweep": {"block15": 0.81, "head": 0.80}, "sweep_validation": {"block15": 0.79, "head": 0.82},
              "size": {"images_per_class": 30, "classes": 10, "large": False, "large_from_per_class": 1000},
              "similarity": {"score": 0.5, "measured": True, "similar": True, "similar_from": 0.35, "mean_max_probability": 0.4},
              "action": {"do": "linear_classifier", "head": "softmax", "layer": "head", "why": "few images"}}
    assert "layer sweep (softmax validation / test accuracy): block15 0.790/0.810, head 0.820/0.800" in describe(result)
    older = {**result, "sweep_validation": None}  # a sweep saved before it recorded validation accuracy
    assert "layer sweep (softmax test accuracy): block15 0.810, head 0.800" in describe(older)


def test_without_an_imagenet_classifier_the_case_names_the_size_alone_and_says_why():
    from tlfs.pipeline.advise import describe, unmeasurable

    sweep = {"layers": {"block6_mean": 0.7, "pre_logits": 0.8}, "best_layer": "pre_logits"}
    assert decide(30, None, Thresholds(1000, 0.35), sweep, ["block6_mean", "pre_logits"]) == (
        "small_unmeasured", {"do": "linear_classifier", "head": "softmax", "layer": "pre_logits",
                             "why": "few images: a linear classifier on the sweep's best layer"})
    assert decide(5000, None, Thresholds(1000, 0.35), None, LAYERS)[0] == "large_unmeasured"
    why = "timm/vit_base_patch16_siglip_224 has no ImageNet classifier"
    assert unmeasurable({"imagenet_classifier": None, "imagenet_classifier_missing": why}) == why
    assert unmeasurable({"imagenet_classifier": {"file": "imagenet_classifier.npz"}}) is None
    text = describe({"case": "small_unmeasured", "sweep": None,
                     "size": {"images_per_class": 30, "classes": 10, "large": False, "large_from_per_class": 1000},
                     "similarity": {"score": None, "measured": False, "why": why, "similar": None},
                     "action": {"do": "linear_classifier", "head": "softmax", "layer": "pre_logits", "why": "few images"}})
    assert f"similarity to ImageNet: cannot be measured: {why}" in text


def test_thresholds_are_overridable():
    assert decide(500, 0.6, Thresholds(400, 0.35), None, LAYERS)[0] == "large_similar"
    assert decide(5000, 0.6, Thresholds(1000, 0.7), None, LAYERS)[0] == "large_different"


@pytest.mark.slow
def test_cifar_sample_is_small_similar_and_flat_colour_patches_are_different(tmp_path, lite0, models_root):
    from tlfs import features
    from tlfs.pipeline.advise import advise
    from tests.conftest import folder_images, shared_cifar_sources, write_tar

    store = str(tmp_path / "s")
    quiet = {"show_progress": False, "log": lambda *_: None}
    run_extract("cifar10", shared_cifar_sources(), "efficientnet_lite0", store, models_root, limit=200, layers=["head"], **quiet)
    cifar = advise(features.open_set("cifar10", "efficientnet_lite0", store=store), log=lambda *_: None)
    assert cifar["case"] == "small_similar" and cifar["size"]["images_per_class"] == 20
    colours = write_tar(tmp_path / "c.tar.gz", folder_images(per_class=20))
    run_extract("colors", [str(colours)], "efficientnet_lite0", store, models_root, **quiet)
    patches = advise(features.open_set("colors", "efficientnet_lite0", store=store), log=lambda *_: None)
    assert patches["case"] == "small_different"
    assert patches["similarity"]["score"] < cifar["similarity"]["score"]


def test_the_stored_classifier_gives_the_networks_own_imagenet_logits(lite0):
    import torch

    from tlfs.models import sample_images
    from tlfs.models.backbones import get_spec, imagenet_classifier, load_backbone
    from tlfs.models.classifier import load_classifier
    from tlfs.models.session import open_session

    weight, bias, layer = load_classifier(lite0)
    assert layer == get_spec("efficientnet_lite0").classifier_input
    photos = np.stack([sample_images.resized(sample_images.photo(n), 224) for n in sample_images.PHOTOS])
    pooled = open_session(lite0, [layer]).run(photos)[layer]
    loaded = load_backbone("efficientnet_lite0")
    with torch.no_grad():
        x = torch.from_numpy(photos).permute(0, 3, 1, 2).float()
        expected = loaded.module.eval()(((x / 255) - torch.tensor(loaded.spec.mean).view(1, 3, 1, 1))
                                 / torch.tensor(loaded.spec.std).view(1, 3, 1, 1)).numpy()
    got = pooled @ weight.T + bias
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-2)
    w, b = imagenet_classifier(loaded)
    np.testing.assert_array_equal(weight, w.numpy())


def test_a_set_without_the_classifiers_layer_is_refused_naming_it(tmp_path, lite0, models_root):
    from tlfs import features
    from tlfs.pipeline.advise import advise
    from tlfs.pipeline.errors import PipelineError
    from tests.conftest import folder_images, write_tree

    store = str(tmp_path / "s")
    run_extract("colors", [str(write_tree(tmp_path / "d", folder_images(per_class=4)))], "efficientnet_lite0", store,
                models_root, layers=["block2"], show_progress=False, log=lambda *_: None)
    with pytest.raises(PipelineError, match="advise reads layer 'head'"):
        advise(features.open_set("colors", "efficientnet_lite0", store=store), log=lambda *_: None)


def test_a_sweep_of_another_version_is_taken_only_where_this_version_holds_its_layer():
    from tlfs.pipeline.advise import sweep_for

    stored = {"plan_id": "p1", "version": 1, "layers": {"block15": 0.81, "head": 0.8}, "best_layer": "block15"}
    assert sweep_for(None, "p3", 3, LAYERS) == (None, None)
    assert sweep_for(stored, "p1", 1, LAYERS) == (stored, None)  # its own version's: nothing to say
    taken, note = sweep_for(stored, "p3", 3, LAYERS)
    assert taken is stored and "of version 1, not 3" in note and "block15, is taken" in note
    # a version extracted with other --layers: the advice never names a layer it does not hold
    left, note = sweep_for(stored, "p3", 3, ["block2", "head"])
    assert left is None and "does not hold: it is left out" in note
    assert decide(30, 0.6, Thresholds(1000, 0.35), left, ["block2", "head"])[1]["layer"] == "head"


def test_the_advice_says_when_the_sweep_is_of_another_version():
    from tlfs.pipeline.advise import describe

    result = {"case": "small_similar", "version": 3, "sweep_version": 1, "sweep": {"head": 0.80}, "sweep_validation": {"head": 0.82},
              "size": {"images_per_class": 30, "classes": 10, "large": False, "large_from_per_class": 1000},
              "similarity": {"score": 0.5, "measured": True, "similar": True, "similar_from": 0.35, "mean_max_probability": 0.4},
              "action": {"do": "linear_classifier", "head": "softmax", "layer": "head", "why": "few images"}}
    assert "layer sweep of version 1 (softmax validation / test accuracy): head 0.820/0.800" in describe(result)
    assert "layer sweep (softmax" in describe({**result, "sweep_version": 3})
