"""``tlfs duplicates``: test images with a near-copy among the training images are found
(the same file, a brightened one, one filed under another class), and a head's test
accuracy is given with and without them."""

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs import features
from tlfs.features.errors import StoreError
from tlfs.pipeline.cli import main
from tlfs.pipeline.duplicates import DuplicatesRequest, find_duplicates
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit
from tests.conftest import report_section, scene_images, write_tree
from tests.extraction import run_extract

QUIET = {"log": lambda *_: None}
THRESHOLD = 0.98  # above any two different scenes (0.95 at most here), below a brightened copy (0.998)


def brightened(png: bytes, by: int = 12) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16) + by
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# test image -> the training image it copies, and how
PLANTED = {"test/red/copy.png": ("train/red/003.png", "the same bytes"),
           "test/blue/brighter.png": ("train/blue/005.png", "brightened"),
           "test/green/misfiled.png": ("train/red/007.png", "filed under another class")}


@pytest.fixture(scope="module")
def copied_set(tmp_path_factory, lite0, models_root):
    root = tmp_path_factory.mktemp("duplicates")
    files = scene_images(per_class=10)
    files.update({name: brightened(files[of]) if how == "brightened" else files[of] for name, (of, how) in PLANTED.items()})
    source = write_tree(root / "images", files)
    store = str(root / "store")
    run_extract("copies", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    return features.open_set("copies", "efficientnet_lite0", store=store), store


def test_the_planted_near_copies_come_first_each_with_the_image_it_copies(copied_set):
    feature_set, store = copied_set
    pairs, summary = find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", threshold=THRESHOLD, store=store), **QUIET)
    top = pairs.head(len(PLANTED))
    assert dict(zip(top["image_id"], top["nearest_id"])) == {name: of for name, (of, _) in PLANTED.items()}
    assert top.set_index("image_id").loc["test/red/copy.png", "similarity"] == pytest.approx(1.0, abs=1e-6)
    assert (top["similarity"] >= THRESHOLD).all() and (pairs["similarity"].iloc[len(PLANTED):] < THRESHOLD).all()
    assert summary["near_copies"] == len(PLANTED) and summary["other_label"] == 1  # the misfiled one
    assert summary["images"] == len(pairs) == 30 + len(PLANTED)
    assert summary["by_class"] == {"red": 1, "green": 1, "blue": 1}
    misfiled = top.set_index("image_id").loc["test/green/misfiled.png"]
    assert (misfiled["label_name"], misfiled["nearest_label_name"]) == ("green", "red")


def test_within_one_split_each_image_of_a_copied_pair_finds_the_other(copied_set):
    _, store = copied_set
    pairs, summary = find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", split="train", against="train",
                                                       threshold=THRESHOLD, store=store), **QUIET)
    assert summary["counted"] == "images with a near-copy in the same split"
    assert (pairs["image_id"] != pairs["nearest_id"]).all() and summary["near_copies"] == 0  # train holds no copies
    pairs, summary = find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", split="test", against="test",
                                                       threshold=0.5, store=store), **QUIET)
    assert summary["near_copies"] > 0 and (pairs["image_id"] != pairs["nearest_id"]).all()


def test_a_heads_accuracy_is_given_with_and_without_the_near_copies(copied_set):
    feature_set, store = copied_set
    result = fit(feature_set, ["head"], "softmax", **QUIET)
    _, summary = find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", threshold=THRESHOLD,
                                                   head="softmax-head", store=store), **QUIET)
    head = summary["head"]
    assert head["all"] == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert head["images_without"] == summary["images"] - len(PLANTED)
    together = (head["without_near_copies"] * head["images_without"] + head["on_near_copies"] * len(PLANTED))
    assert together / summary["images"] == pytest.approx(head["all"], abs=1e-3)


def test_the_command_prints_the_pairs_writes_them_and_refuses_what_it_cannot_do(copied_set, tmp_path, capsys):
    _, store = copied_set
    output = tmp_path / "pairs.csv"
    assert main(["duplicates", "--dataset", "copies", "--store", store, "--output", str(output), "--show", "2",
                 "--threshold", str(THRESHOLD)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 of 33 test images with a near-copy in train (cosine similarity >= 0.98 on head), 1 of them of another class"
    assert len([line for line in out if " ~ " in line]) == 2 and json.loads(out[-1])["near_copies"] == 3
    written = pd.read_csv(output)
    assert len(written) == 33 and written["near_copy"].sum() == 3
    assert main(["duplicates", "--dataset", "copies", "--store", store, "--threshold", "1.5"]) == 1
    assert "threshold 1.5: a cosine similarity above 0 and at most 1" in capsys.readouterr().err
    with pytest.raises(StoreError, match="layer 'block99' is not in"):
        find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", layer="block99", store=store), **QUIET)
    with pytest.raises(PipelineError, match="no head 'mlp-block2'"):
        find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", head="mlp-block2", store=store), **QUIET)


def test_the_sheet_shows_each_image_beside_its_nearest_where_the_threshold_cuts(copied_set, tmp_path, capsys):
    from tlfs.pipeline.duplicates import PAIRS_A_ROW
    from tlfs.pipeline.image_sheet import THUMB

    _, store = copied_set
    sheet = tmp_path / "pairs.png"
    assert main(["duplicates", "--dataset", "copies", "--store", store, "--threshold", str(THRESHOLD), "--show", "2",
                 "--sheet", str(sheet)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["sheet"] == str(sheet)
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    # two sections of one row of two pairs: a title, the images and their captions each
    assert pixels.shape == (2 * 18 + 2 * (THUMB + 14), PAIRS_A_ROW * (2 * THUMB + 16), 3)
    first, nearest = pixels[18:18 + THUMB, :THUMB], pixels[18:18 + THUMB, THUMB + 2:2 * THUMB + 2]
    assert (first == nearest).all() and first.std() > 10  # an exact copy beside what it copies, read from the source
    below = pixels[2 * 18 + THUMB + 14:2 * 18 + 2 * THUMB + 14, :THUMB]
    assert not (below == pixels[2 * 18 + THUMB + 14:2 * 18 + 2 * THUMB + 14, THUMB + 2:2 * THUMB + 2]).all()


def test_a_check_kept_with_save_is_what_the_report_shows(copied_set, capsys, tmp_path):
    from tlfs.pipeline.report import ReportRequest, report

    feature_set, store = copied_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    page, _ = report(ReportRequest("copies", "efficientnet_lite0", store), **QUIET)
    assert "No near-copy check kept" in page and "tlfs duplicates --dataset copies --head HEAD --save" in page
    assert main(["duplicates", "--dataset", "copies", "--store", store, "--threshold", str(THRESHOLD), "--head",
                 "softmax-head", "--save", "--show", "2", "--sheet", str(tmp_path / "pairs.png")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    heads = f"{feature_set.uri}/_heads"
    assert summary["saved_to"] == f"{heads}/near_copies.json"
    kept = json.loads(open(summary["saved_to"]).read())
    assert kept == {k: v for k, v in summary.items() if k not in ("output", "sheet", "saved_to")}
    pairs = pd.read_parquet(f"{heads}/near_copies.parquet")
    assert len(pairs) == 33 and set(pairs["image_id"][:3]) == set(PLANTED)  # most similar first, as --output writes them

    page, _ = report(ReportRequest("copies", "efficientnet_lite0", store), **QUIET)
    section = report_section(page, "Is the test split honest?")
    assert "<b>3 of 33</b> test images with a near-copy in train (9.09 %)" in section
    assert "head features at least 0.98; 1 of them labelled as another class" in section
    head = kept["head"]
    assert (f"<tr><td>softmax-head</td><td class=n>{100 * head['all']:.2f} %</td>"
            f"<td class=n>{100 * head['without_near_copies']:.2f} %</td>") in section
    closest = section.split("The closest pairs:", 1)[1].split("labelled as another class", 1)[0]
    assert all(f"<td>{name}</td><td>{name.split('/')[1]}</td><td>{of}</td>" in closest for name, (of, _) in PLANTED.items())
    other = section.split("labelled as another class", 2)[2]  # the table of pairs of two classes: the misfiled one alone
    assert "<td>test/green/misfiled.png</td><td>green</td><td>train/red/007.png</td><td>red</td>" in other
    assert other.count("<tr><td>") == 1
    assert main(["describe", "--dataset", "copies", "--store", store]) == 0  # describe names the check too
    assert (f"check         near_copies   3 of 33 test images with a near-copy in train (9.09%) at 0.98 on head, on "
            f"version {feature_set.version}") in capsys.readouterr().out.splitlines()
    kept_sheet = f"{heads}/near_copies.png"  # the --sheet kept with the check, shown on the page
    assert open(kept_sheet, "rb").read() == (tmp_path / "pairs.png").read_bytes() and "Where the threshold cuts" in section
    # a check kept again without a sheet takes the older sheet away: it would show pairs of another threshold
    assert main(["duplicates", "--dataset", "copies", "--store", store, "--threshold", "0.99", "--save"]) == 0
    page, _ = report(ReportRequest("copies", "efficientnet_lite0", store), **QUIET)
    assert not os.path.exists(kept_sheet) and "Where the threshold cuts" not in page and "at least 0.99;" in page


def test_with_no_layer_named_the_check_compares_head_else_the_deepest_layer(copied_set):
    from types import SimpleNamespace

    from tlfs.pipeline.duplicates import compared_layer

    _, store = copied_set
    _, summary = find_duplicates(DuplicatesRequest("copies", "efficientnet_lite0", store=store), **QUIET)
    assert summary["layer"] == "head"
    assert compared_layer(SimpleNamespace(layers={"layer1": 256, "layer4": 2048})) == "layer4"


def test_the_fit_dags_check_stands_without_its_sheet_where_the_sources_are_gone(copied_set):
    from pathlib import Path

    from tlfs.pipeline import tasks

    feature_set, store = copied_set
    fit(feature_set, ["head"], "softmax", **QUIET)
    source = Path(feature_set.lineage["sources"][0]["uri"])
    moved, logged = source.rename(source.with_name("moved")), []
    try:
        checked = tasks.check_near_copies(tasks.SetTarget("copies", "efficientnet_lite0", store), "softmax-head",
                                          log=logged.append)
    finally:
        moved.rename(source)
    heads = Path(feature_set.uri) / "_heads"
    assert checked["sheet"] is False and any(line.startswith("note: no sheet of images") for line in logged)
    assert json.loads((heads / "near_copies.json").read_text())["head"]["name"] == "softmax-head"
    assert not (heads / "near_copies.png").exists()
    assert tasks.check_near_copies(tasks.SetTarget("copies", "efficientnet_lite0", store), "softmax-head", **QUIET)["sheet"]
    assert (heads / "near_copies.png").exists()
