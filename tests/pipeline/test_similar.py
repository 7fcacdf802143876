"""``tlfs similar``: a feature set searched by example. An image goes the way the set's
images went, so a stored image finds itself first, a brightened copy finds the image it
copies, and the matches come in the order of their cosine similarity on the stored
features."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.similar import RESULT_COLUMNS, SimilarRequest, similar_images
from tests.conftest import scene_images, write_tree
from tests.extraction import run_extract
from tests.pipeline.test_duplicates import brightened

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory, lite0, models_root):
    root = tmp_path_factory.mktemp("similar")
    files = scene_images(per_class=4)
    source = write_tree(root / "images", files)
    store = str(root / "store")
    run_extract("scenes", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    return features.open_set("scenes", "efficientnet_lite0", store=store), source, files, store


def search(store, images, **options) -> pd.DataFrame:
    return similar_images(SimilarRequest("scenes", "efficientnet_lite0", tuple(map(str, images)), store=store, **options),
                          **QUIET)


def cosine_order(feature_set, layer: str, image_id: str) -> tuple[list[str], np.ndarray]:
    """Every stored image by its cosine similarity to ``image_id``'s stored features, most similar first."""
    blocks = [feature_set.matrix(layer, split) for split in feature_set.splits]
    X, ids = np.vstack([b[0] for b in blocks]), np.concatenate([b[2] for b in blocks])
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    similarity = unit @ unit[list(ids).index(image_id)]
    order = np.argsort(-similarity, kind="stable")
    return list(ids[order]), similarity[order]


@pytest.mark.parametrize("layer", ["head", "block15"])
def test_a_stored_image_finds_itself_first_then_the_rest_in_order_of_their_stored_features(scene_set, layer):
    feature_set, source, _, store = scene_set
    results = search(store, [source / "train/red/001.png"], layer=layer, k=4)
    assert list(results.columns) == RESULT_COLUMNS and list(results["rank"]) == [1, 2, 3, 4]
    ids, similarity = cosine_order(feature_set, layer, "train/red/001.png")
    assert list(results["image_id"]) == ids[:4]
    np.testing.assert_allclose(results["similarity"], similarity[:4], atol=1e-4)
    assert results["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-4) and results["similarity"].iloc[1] < 0.97
    assert list(results["split"]) == [i.split("/")[0] for i in ids[:4]]
    assert list(results["label_name"]) == [i.split("/")[1] for i in ids[:4]]


def test_a_stored_image_named_by_its_id_is_searched_for_by_its_stored_features_and_is_not_its_own_match(scene_set):
    feature_set, _, _, store = scene_set
    results = search(store, [], ids=("test/green/002.png", "test/green/nowhere.png"), k=3)
    ids, similarity = cosine_order(feature_set, "head", "test/green/002.png")
    found = results[results["image"] == "test/green/002.png"]
    assert list(found["image_id"]) == ids[1:4] and list(found["rank"]) == [1, 2, 3]
    np.testing.assert_allclose(found["similarity"], similarity[1:4], atol=1e-5)
    missing = results[results["image"] == "test/green/nowhere.png"]
    assert list(missing["rank"]) == [0] and missing["reason"].iloc[0].startswith("no image 'test/green/nowhere.png' in ")


def test_a_brightened_copy_finds_the_image_it_copies(scene_set, tmp_path):
    _, _, files, store = scene_set
    copy = tmp_path / "copy.png"
    copy.write_bytes(brightened(files["test/blue/002.png"]))
    results = search(store, [copy], k=2)
    assert results["image_id"].iloc[0] == "test/blue/002.png" and results["similarity"].iloc[0] > 0.99
    assert results["similarity"].iloc[1] < 0.97


def test_only_the_splits_named_are_searched(scene_set):
    _, source, _, store = scene_set
    results = search(store, [source / "train/red/001.png"], splits=("test",), k=3)
    assert set(results["split"]) == {"test"} and results["similarity"].max() < 0.97
    by_id = search(store, [], ids=("train/red/001.png",), splits=("test",), k=3)  # its features read from train
    assert list(by_id["image_id"]) == list(results["image_id"])
    np.testing.assert_allclose(by_id["similarity"], results["similarity"], atol=1e-4)


def test_an_image_that_cannot_be_decoded_has_a_reason_and_the_rest_are_searched(scene_set, tmp_path):
    _, source, _, store = scene_set
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    results = search(store, [broken, source / "test/green"], k=1)
    assert list(results["image"]) == [str(broken)] + [str(source / f"test/green/{i:03d}.png") for i in range(4)]
    assert (results["rank"].iloc[0], results["reason"].iloc[0]) == (0, "not a recognised image format")
    assert list(results["image_id"].iloc[1:]) == [f"test/green/{i:03d}.png" for i in range(4)]


def test_what_cannot_be_searched_is_told_with_what_can(scene_set):
    _, source, _, store = scene_set
    image = [source / "test/red/000.png"]
    with pytest.raises(PipelineError, match="has no layer 'block99'; it has block2, .*head"):
        search(store, image, layer="block99")
    with pytest.raises(PipelineError, match="has no split validation; it has test, train"):
        search(store, image, splits=("validation",))
    with pytest.raises(PipelineError, match="k 0: at least one match an image"):
        search(store, image, k=0)
    with pytest.raises(PipelineError, match="either as files .* or as stored ids, one of the two"):
        search(store, image, ids=("test/red/000.png",))
    with pytest.raises(PipelineError, match="either as files .* or as stored ids, one of the two"):
        search(store, [])


def test_the_command_prints_each_images_matches_writes_them_and_draws_them(scene_set, tmp_path, capsys):
    from tlfs.pipeline.image_sheet import BETWEEN, CAPTION, INSIDE, THUMB, TITLE

    _, source, _, store = scene_set
    images = [str(source / "test/red/000.png"), str(source / "train/blue/003.png")]
    assert main(["similar", "--dataset", "scenes", "--store", store, "-k", "2", "--no-progress", *images]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == images[0] and out[1].startswith("  1  1.0000  test/red/000.png (red)") and out[3] == images[1]
    assert json.loads(out[-1])["nearest_labels"] == {"red": 1, "blue": 1}
    table, sheet = tmp_path / "matches.csv", tmp_path / "matches.png"
    assert main(["similar", "--dataset", "scenes", "--store", store, "-k", "2", "--no-progress", "--output", str(table),
                 "--sheet", str(sheet), *images]) == 0
    written = pd.read_csv(table)
    assert list(written["image"]) == [images[0]] * 2 + [images[1]] * 2 and list(written["rank"]) == [1, 2, 1, 2]
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    assert pixels.shape == (TITLE + 2 * (THUMB + CAPTION), 3 * THUMB + 2 * INSIDE + BETWEEN, 3)
    for row in range(2):  # each image beside itself read again from the source: the same pixels
        top = TITLE + row * (THUMB + CAPTION)
        given, found = pixels[top:top + THUMB, :THUMB], pixels[top:top + THUMB, THUMB + INSIDE:2 * THUMB + INSIDE]
        assert (given == found).all() and given.std() > 10
    assert not (pixels[TITLE:TITLE + THUMB, :THUMB] == pixels[TITLE + THUMB + CAPTION:TITLE + 2 * THUMB + CAPTION, :THUMB]).all()


def test_the_command_searches_for_stored_images_by_id_and_draws_them_read_from_the_sources(scene_set, tmp_path, capsys):
    from tlfs.pipeline.image_sheet import BETWEEN, CAPTION, INSIDE, THUMB, TITLE

    _, _, files, store = scene_set
    sheet = tmp_path / "matches.png"
    assert main(["similar", "--dataset", "scenes", "--store", store, "-k", "1", "--id", "test/blue/001.png",
                 "--sheet", str(sheet), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "test/blue/001.png" and out[1].startswith("  1  0.") and "test/blue/001.png" not in out[1]
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    assert pixels.shape == (TITLE + THUMB + CAPTION, 2 * THUMB + INSIDE + BETWEEN, 3)
    original = Image.open(io.BytesIO(files["test/blue/001.png"])).convert("RGB").resize((THUMB, THUMB), Image.Resampling.NEAREST)
    def off(left: int) -> float:
        return np.abs(pixels[TITLE:TITLE + THUMB, left:left + THUMB].astype(int) - np.asarray(original).astype(int)).mean()

    assert off(0) < 8 < off(THUMB + INSIDE)  # the image itself first, then its match: another scene


def test_a_sheet_draws_the_first_images_searched_for_a_row_each(scene_set, monkeypatch):
    from tlfs.pipeline import similar
    from tlfs.pipeline.image_sheet import CAPTION, THUMB, TITLE

    _, source, _, store = scene_set
    monkeypatch.setattr(similar, "SHEET_IMAGES", 2)
    request = SimilarRequest("scenes", "efficientnet_lite0", (str(source / "test/red"),), k=1, store=store)
    said = []
    sheet = similar.results_sheet(request, similar_images(request, **QUIET), log=said.append)
    assert np.asarray(Image.open(io.BytesIO(sheet))).shape[0] == TITLE + 2 * (THUMB + CAPTION)
    assert "the sheet draws the first 2 of the 4 images searched for" in said
