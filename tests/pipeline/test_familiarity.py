"""``tlfs predict --unfamiliar``: whether an image is like the set's training images at all,
apart from which class the head gives it. An image is unfamiliar where the cosine of its
features to its k-th most similar training image falls below a threshold drawn from the
training images themselves, each scored against the others: new images of the same kind are
marked about as often as the share asks, images of another kind nearly always."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.familiarity import NEIGHBOURS, default_neighbours, familiarity_from, familiarity_of
from tlfs.pipeline.fit import fit
from tlfs.pipeline.predict import PREDICTION_COLUMNS, PredictRequest, predict

QUIET = {"log": lambda *_: None}


def blob_rows(centres: np.ndarray, per_centre: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([centre + rng.normal(size=(per_centre, centres.shape[1])) for centre in centres]).astype(np.float32)


CENTRES = np.random.default_rng(0).normal(size=(4, 16)) * 3  # three known kinds, and one never seen


@pytest.mark.parametrize("share", [0.95, 0.8])
def test_new_rows_of_the_known_kinds_are_unfamiliar_about_as_often_as_the_share_leaves_and_another_kind_nearly_always(share):
    familiarity = familiarity_from({"layer": blob_rows(CENTRES[:3], 300, seed=1)}, neighbours=10, share=share)
    new_known = familiarity.similarity(blob_rows(CENTRES[:3], 400, seed=2)) < familiarity.threshold
    new_kind = familiarity.similarity(blob_rows(CENTRES[3:], 200, seed=3)) < familiarity.threshold
    assert abs(new_known.mean() - (1 - share)) < 0.03  # 1,200 new rows: a binomial's spread is about 0.006-0.012
    assert new_kind.mean() > 0.97


def test_the_threshold_is_drawn_from_the_training_rows_each_scored_against_the_others():
    rows = blob_rows(CENTRES[:3], 300, seed=1)
    familiarity = familiarity_from({"layer": rows}, neighbours=1, share=0.9, calibration_images=900)
    assert familiarity.calibration_images == 900
    # scored against a set that holds itself, each row would be at a cosine of 1: left out, it is not
    assert familiarity.threshold < 0.99
    assert np.mean(familiarity.similarity(rows) >= 0.9999) == 1.0
    assert np.mean(np.partition(-(familiarity.references @ familiarity.references.T), 1, axis=1)[:, 1] * -1
                   >= familiarity.threshold) == pytest.approx(0.9, abs=0.003)


def test_each_layer_counts_the_same_whatever_its_scale():
    known, stranger = blob_rows(CENTRES[:3], 200, seed=1), blob_rows(CENTRES[3:], 100, seed=3)
    # a second layer that cannot tell the kinds apart, at a thousand times the scale: joined as they are it would
    # drown the first; at unit length each, the first still marks the stranger
    loud = lambda n, seed: (np.random.default_rng(seed).normal(size=(n, 64)) + 50).astype(np.float32) * 1000
    familiarity = familiarity_from({"useful": known, "loud": loud(600, 4)}, neighbours=10, share=0.95)
    joined = lambda rows, seed: np.hstack([rows, loud(len(rows), seed)])
    assert (familiarity.similarity(joined(stranger, 5)) < familiarity.threshold).mean() > 0.9
    assert familiarity.widths == (16, 64) and familiarity.layers == ("useful", "loud")


def test_by_default_k_is_50_or_half_the_smallest_class_where_fewer():
    assert default_neighbours(np.repeat([0, 1, 2], [5000, 4000, 5000])) == NEIGHBOURS == 50
    assert default_neighbours(np.repeat([0, 2, 3], [12, 40, 7])) == 3  # a class with no images does not count
    assert default_neighbours(np.array([0, 1, 1, 1])) == 1


def foreign_images(folder) -> list[str]:
    """Images of no kind the noisy set knows: checkerboards, stripes and smooth gradients."""
    folder.mkdir(exist_ok=True)
    paths = []
    y, x = np.mgrid[0:40, 0:48]
    patterns = {"checks": ((x // 4 + y // 4) % 2) * 255, "stripes": (x % 6 < 3) * 255, "gradient": x * 5,
                "rings": (np.hypot(x - 24, y - 20).astype(int) % 8 < 4) * 255}
    for name, grey in patterns.items():
        path = folder / f"{name}.png"
        Image.fromarray(np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_the_sets_own_test_images_are_familiar_and_images_of_another_kind_are_not(noisy_set, tmp_path):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    foreign = foreign_images(tmp_path / "foreign")
    said = []
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", (str(source / "test"), *foreign), "softmax-head",
                                         store, unfamiliar=True, neighbours=5), log=said.append)
    own, other = predictions[:-len(foreign)], predictions[-len(foreign):]
    assert len(own) == 36 and [p.image for p in other] == foreign
    assert sum(p.familiar for p in own) >= 30  # 95 % of the training images reach the threshold: most new ones do
    assert not any(p.familiar for p in other)
    assert max(p.similarity for p in other) < min(p.similarity for p in own)
    assert all(p.label in feature_set.classes for p in other)  # the head still gives each a class
    assert said[0].startswith("familiarity: 36 training images of head; an image is unfamiliar below a cosine of ")
    assert f"(0 could not be decoded, {len(foreign) + 36 - sum(p.familiar for p in own)} unfamiliar)" in said[-1]


def test_the_familiarity_is_measured_on_the_heads_layers_original_images(noisy_set):
    feature_set, source, store = noisy_set
    fit(feature_set, ["block14", "head"], "softmax", views=["original", "flip"], **QUIET)
    ids = feature_set.matrix("head", "train")[2][:6]
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", tuple(str(source / i) for i in ids),
                                         "softmax-block14+head", store, unfamiliar=True, neighbours=1), **QUIET)
    # a training image's own features are stored: its most similar training image is itself
    assert [p.similarity for p in predictions] == pytest.approx([1.0] * 6, abs=2e-3)
    familiarity = familiarity_of(feature_set, ["block14", "head"], neighbours=1, **QUIET)
    assert familiarity.layers == ("block14", "head") and len(familiarity.references) == 36


def test_a_small_set_measures_by_half_its_smallest_class_unless_told(noisy_set):
    feature_set, _, _ = noisy_set
    said = []
    assert familiarity_of(feature_set, ["head"], log=said.append).neighbours == 6  # 12 training images a class
    assert "to its 6th most similar (95% of 36 training images reach it)" in said[0]
    assert familiarity_of(feature_set, ["head"], neighbours=2, **QUIET).neighbours == 2


def test_without_the_flag_nothing_is_measured(noisy_set):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    predictions = predict(PredictRequest("noisy", "efficientnet_lite0", (str(source / "test/red"),), "softmax-head",
                                         store), **QUIET)
    assert {(p.similarity, p.familiar) for p in predictions} == {(None, None)}


def test_bad_options_and_too_few_training_images_are_told(noisy_set):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    request = lambda **options: PredictRequest("noisy", "efficientnet_lite0", (str(source / "test/red"),),
                                               "softmax-head", store, unfamiliar=True, **options)
    with pytest.raises(PipelineError, match="familiar share 1.0: a fraction between 0 and 1"):
        predict(request(familiar_share=1.0), **QUIET)
    with pytest.raises(PipelineError, match="neighbours 0: at least 1"):
        predict(request(neighbours=0), **QUIET)
    with pytest.raises(PipelineError, match=r"has 36 training images: too few to measure familiarity by the 36th most "
                                            r"similar \(--neighbours\)"):
        predict(request(neighbours=36), **QUIET)


def test_the_cli_marks_unfamiliar_images_counts_them_and_writes_both_columns(noisy_set, tmp_path, capsys):
    feature_set, source, store = noisy_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    foreign = foreign_images(tmp_path / "foreign")
    args = ["predict", "--dataset", "noisy", "--head", "softmax-head", "--store", store, "--unfamiliar",
            "--neighbours", "5", "--no-progress", str(source / "test/green/000.png"), *foreign]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.endswith("\tunfamiliar") for line in out[:-1]] == [False] + [True] * len(foreign)
    assert json.loads(out[-1])["unfamiliar"] == len(foreign)
    table = tmp_path / "predictions.csv"
    assert main([*args, "--output", str(table)]) == 0
    written = pd.read_csv(table)
    assert list(written.columns) == PREDICTION_COLUMNS
    assert written["familiar"].tolist() == [True] + [False] * len(foreign)
    assert (written["similarity"].iloc[1:] < written["similarity"].iloc[0]).all()
