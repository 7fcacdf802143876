"""The feature store and the model artifacts on s3://, against moto's S3 server
started as a separate process on loopback (a real HTTP endpoint, not a mock)."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline import extract
from tests.conftest import folder_images, write_tar, write_tree
from tests.extraction import run_extract


def test_extract_commit_list_and_load_on_s3(s3_server, tmp_path, monkeypatch):
    import fsspec

    source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=3))
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(source), "tlfs-test/datasets/colors.tar.gz")
    store, models = "s3://tlfs-test/store", "s3://tlfs-test/models"
    summary = run_extract("colors", ["s3://tlfs-test/datasets/colors.tar.gz"], "efficientnet_lite0", store, models,
                          layers=["block15", "head"], shard_size=4, cache_dir=str(tmp_path / "cache"),
                          show_progress=False, log=lambda *_: None)
    assert summary["set_uri"].startswith("s3://tlfs-test/store/colors/")
    assert summary["counts"]["train"] == {"read": 9, "written": 9, "rejected": 0}

    listed = features.list_sets(store)
    assert listed.loc[0, "dataset"] == "colors" and listed.loc[0, "rows"] == 18
    frame = features.load("colors", "efficientnet_lite0", "head", "train", store)
    assert len(frame) == 9 and frame["features"].iloc[0].shape == (1280,)
    X, y, ids = features.load_matrix("colors", "efficientnet_lite0", "block15", "test", store)
    assert X.shape == (9, 320)
    plain = pd.read_parquet(f"{summary['set_uri']}/layer=head")  # pandas + s3fs, no tlfs code
    assert len(plain) == 18
    keys = fs.find("tlfs-test/models")
    assert any(k.endswith("model.onnx") for k in keys) and any(k.endswith("model_card.json") for k in keys)
    assert not [k for k in fs.find("tlfs-test/store") if k.endswith(".tmp")]

    # in int8: the graph quantized from the store's model (fetched into the local cache) and put beside it
    in_int8 = run_extract("colors", ["s3://tlfs-test/datasets/colors.tar.gz"], "efficientnet_lite0", store, models,
                          layers=["head"], shard_size=4, cache_dir=str(tmp_path / "cache"), precision="int8",
                          show_progress=False, log=lambda *_: None)
    assert in_int8["images_extracted"] == 18 and in_int8["version"] == 2
    lineage = features.describe("colors", "efficientnet_lite0", store)["lineage"]
    assert lineage["runtime"]["precision"] == "int8"
    assert any(k.endswith(f"model.int8.{lineage['onnx_file_sha256'][:16]}.onnx") for k in fs.find("tlfs-test/models"))


@pytest.mark.slow
def test_a_long_lived_reader_sees_what_another_process_commits_since(s3_server, tmp_path):
    """A notebook that loaded version 1 loads version 2 once another process commits it,
    with no stale listing or cached ETag in the way (s3fs caches both per process)."""
    import json
    import subprocess
    import sys

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    store, models = "s3://tlfs-test/store", "s3://tlfs-test/models"
    run = ("import sys; from tests.extraction import run_extract; run_extract('colors', [sys.argv[1]], 'efficientnet_lite0', "
           f"'{store}', '{models}', layers=['head'], shard_size=4, cache_dir=sys.argv[2], show_progress=False, "
           "log=lambda *_: None)")
    for n, per_class in ((1, 2), (2, 3)):  # the second run: one more image per class and split
        source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=per_class))
        fs.put_file(str(source), "tlfs-test/datasets/colors.tar.gz")
        # another process, as a scheduled run would be
        subprocess.run([sys.executable, "-c", run, "s3://tlfs-test/datasets/colors.tar.gz", str(tmp_path / "cache")],
                       check=True, timeout=600)
        opened = features.open_set("colors", "efficientnet_lite0", store=store)
        assert opened.version == n
        assert len(features.load("colors", "efficientnet_lite0", "head", "train", store)) == 3 * per_class
        assert list(features.history("colors", "efficientnet_lite0", store)["version"]) == list(range(1, n + 1))
    assert json.loads(fs.cat_file(opened.uri.removeprefix("s3://") + "/_manifest.json"))["rows"] == 18


@pytest.mark.slow
def test_versions_retired_files_vacuum_and_verify_repair_on_s3(s3_server, tmp_path, lite0, models_root):
    """On s3://: a second version moves the files it no longer uses to _retired/, an
    older version stays readable from there until vacuumed, and verify names a damaged
    object and --repair re-extracts only its shard."""
    import fsspec

    from tlfs.features.versions import Retention

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    store = "s3://tlfs-test/store"

    def run(files: dict, name: str) -> dict:
        source = write_tar(tmp_path / name, files)
        fs.put_file(str(source), "tlfs-test/datasets/colors.tar")
        return run_extract("colors", ["s3://tlfs-test/datasets/colors.tar"], "efficientnet_lite0", store, models_root,
                           layers=["head"], shard_size=2, cache_dir=str(tmp_path / "cache"), show_progress=False,
                           log=lambda *_: None)

    files = folder_images(per_class=2)
    first = run(files, "v1.tar")
    old_rows = features.load("colors", "efficientnet_lite0", "head", "train", store, version=1)
    # one image replaced by another picture: its shard is rewritten without it, the old file retired
    second = run({**files, "train/red/000.png": folder_images(per_class=3)["train/green/002.png"]}, "v2.tar")
    root = second["set_uri"].removeprefix("s3://")
    retired = [k for k in fs.find(f"{root}/_retired") if k.endswith(".parquet")]
    assert second["version"] == 2 and retired, "the second version retired none of the first's files"
    again = features.load("colors", "efficientnet_lite0", "head", "train", store, version=1)
    assert list(again["image_id"]) == list(old_rows["image_id"])  # read from _retired/

    report = extract.vacuum(second["set_uri"], Retention(versions=1, days=None))
    assert report["versions_vacuumed"] == [1] and report["files_removed"] == len(retired)
    assert not [k for k in fs.find(f"{root}/_retired") if k.endswith(".parquet")]
    with pytest.raises(features.NotCommitted, match="version 1 of .* was vacuumed"):
        features.load("colors", "efficientnet_lite0", "head", "train", store, version=1)

    assert extract.verify(second["set_uri"], log=lambda *_: None)["bad"] == []
    victim = sorted(k for k in fs.find(f"{root}/layer=head") if k.endswith(".parquet"))[0]
    fs.pipe_file(victim, fs.cat_file(victim)[:-1] + b"\0")  # one byte flipped
    report = extract.verify(second["set_uri"], log=lambda *_: None)
    assert [b["path"] for b in report["bad"]] == [victim[len(root) + 1:]] and report["bad"][0]["reason"] == "sha256 mismatch"
    repaired = extract.verify(second["set_uri"], repair=True, log=lambda *_: None)
    assert repaired["repaired"] and extract.verify(second["set_uri"], log=lambda *_: None)["bad"] == []
    assert first["version"] == 1


def colors_with_a_head_on_s3(tmp_path, store: str):
    """A set of coloured images extracted from a tar on S3 into ``store`` on S3, with its
    softmax head on ``head`` fitted: the images, the S3 filesystem and the set."""
    import fsspec

    from tlfs.pipeline.fit import fit

    files = folder_images(per_class=3)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(write_tar(tmp_path / "colors.tar", files, "w")), "tlfs-test/datasets/colors.tar")
    run_extract("colors", ["s3://tlfs-test/datasets/colors.tar"], "efficientnet_lite0", store, "s3://tlfs-test/models",
                layers=["head"], cache_dir=str(tmp_path / "cache"), show_progress=False, log=lambda *_: None)
    feature_set = features.open_set("colors", "efficientnet_lite0", store=store)
    fit(feature_set, ["head"], "softmax", log=lambda *_: None)
    return files, fs, feature_set


def test_a_head_on_s3_classifies_new_images_on_s3(s3_server, tmp_path, lite0, models_root):
    """``tlfs predict`` where everything is on an object store: the set, its model, its saved
    head, the new images (a folder and a glob) and the table of predictions."""
    from tlfs.pipeline.predict import PredictRequest, predict, write_predictions

    store = "s3://tlfs-test/store"
    files, fs, _ = colors_with_a_head_on_s3(tmp_path, store)
    for name in ("red/000.png", "blue/001.png", "green/002.png"):
        fs.pipe(f"tlfs-test/new/{name}", files[f"test/{name}"])
    for images in (("s3://tlfs-test/new",), ("s3://tlfs-test/new/*/*.png",)):
        predictions = predict(PredictRequest("colors", "efficientnet_lite0", images, "softmax-head", store),
                              log=lambda *_: None)
        assert [(p.image.rsplit("/", 2)[-2], p.label) for p in predictions] == [("blue", "blue"), ("green", "green"),
                                                                                ("red", "red")]
        assert all(p.image.startswith("s3://tlfs-test/new/") for p in predictions)
    local = write_tree(tmp_path / "mine", {"red.png": files["test/red/002.png"]}) / "red.png"
    mixed = predict(PredictRequest("colors", "efficientnet_lite0", (str(local), "s3://tlfs-test/new/blue"), "softmax-head",
                                   store), log=lambda *_: None)  # a local file and an object store's in one call
    assert [(p.image, p.label) for p in mixed] == [(str(local), "red"), ("s3://tlfs-test/new/blue/001.png", "blue")]
    write_predictions(predictions, "s3://tlfs-test/out/predictions.csv")
    assert len(pd.read_csv("s3://tlfs-test/out/predictions.csv")) == 3


def test_a_head_on_s3_ships_as_a_classifier_beside_it_or_anywhere(s3_server, tmp_path, lite0):
    """``tlfs export-classifier`` of a head whose set and model are on an object store: the
    file beside the head by default, or where ``--output`` says."""
    import onnxruntime as ort

    from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier

    store = "s3://tlfs-test/shipped"
    files, fs, feature_set = colors_with_a_head_on_s3(tmp_path, store)
    beside = export_classifier(ClassifierRequest("colors", "efficientnet_lite0", "softmax-head", store=store),
                               log=lambda *_: None)
    assert beside["output"] == f"{feature_set.uri}/_heads/softmax-head/classifier.onnx"
    anywhere = export_classifier(ClassifierRequest("colors", "efficientnet_lite0", "softmax-head",
                                                   "s3://tlfs-test/deploy/colors.onnx", store), log=lambda *_: None)
    data = fs.cat_file("tlfs-test/deploy/colors.onnx")
    assert data == fs.cat_file(beside["output"]) and len(data) == anywhere["bytes"]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    red = np.asarray(Image.open(io.BytesIO(files["test/red/000.png"])).convert("RGB"))[None]
    assert feature_set.classes[int(session.run(["label"], {"images": red})[0][0])] == "red"


def test_a_set_on_s3_is_searched_by_example_and_its_matches_drawn_from_its_source_on_s3(s3_server, tmp_path, lite0):
    """``tlfs similar`` where the set, its model, its source and the images searched for are
    on an object store: a stored image's file finds itself; by id, the sheet's images are
    read from the tar on S3 and the sheet written to S3."""
    from tlfs.pipeline.cli import main
    from tlfs.pipeline.similar import SimilarRequest, similar_images

    store = "s3://tlfs-test/searched"
    files, fs, _ = colors_with_a_head_on_s3(tmp_path, store)
    fs.pipe("tlfs-test/asked/green.png", files["test/green/001.png"])
    results = similar_images(SimilarRequest("colors", "efficientnet_lite0", ("s3://tlfs-test/asked",), k=2, store=store),
                             log=lambda *_: None)
    assert list(results["image"]) == ["s3://tlfs-test/asked/green.png"] * 2
    assert results["image_id"].iloc[0] == "test/green/001.png" and results["similarity"].iloc[0] == pytest.approx(1, abs=1e-4)
    assert main(["similar", "--dataset", "colors", "--store", store, "--id", "test/red/000.png", "-k", "2",
                 "--sheet", "s3://tlfs-test/out/matches.png", "--no-progress"]) == 0
    sheet = np.asarray(Image.open(io.BytesIO(fs.cat_file("tlfs-test/out/matches.png"))).convert("RGB"))
    assert sheet.shape[1] == 3 * 96 + 2 * 2 + 14 and sheet[18:18 + 96, :96].std() > 10  # the image itself, read from S3


def test_the_labels_of_a_set_on_s3_are_checked_and_ranked_with_the_table_and_sheet_written_to_s3(s3_server, tmp_path, lite0):
    """``tlfs label-issues`` where the set, its model and its source are on an object store:
    every image ranked, the table and the sheet (its images read from the tar on S3) written
    to S3."""
    from tlfs.pipeline.cli import main

    store = "s3://tlfs-test/checked"
    files, fs, _ = colors_with_a_head_on_s3(tmp_path, store)
    assert main(["label-issues", "--dataset", "colors", "--store", store, "--folds", "3", "--all", "--show", "0",
                 "--output", "s3://tlfs-test/out/ranked.csv", "--sheet", "s3://tlfs-test/out/doubtful.png"]) == 0
    ranked = pd.read_csv("s3://tlfs-test/out/ranked.csv")
    assert sorted(ranked["image_id"]) == sorted(f for f in files if f.startswith("train/"))
    assert ranked["label_probability"].is_monotonic_increasing
    sheet = np.asarray(Image.open(io.BytesIO(fs.cat_file("tlfs-test/out/doubtful.png"))).convert("RGB"))
    assert sheet.shape == (18 + 96 + 2 * 14, 10 * (96 + 14), 3) and sheet[18:18 + 96, :96].std() > 10  # read from S3
