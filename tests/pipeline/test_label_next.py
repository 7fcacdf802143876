"""``tlfs label-next``: of a pool of unlabelled images, the ones a saved head is least sure of,
scored as ``tlfs predict`` scores them, spread over what they look like."""

import json

import numpy as np
import pandas as pd
import pytest

from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit
from tlfs.pipeline.label_next import CHOSEN_COLUMNS, LabelNextRequest, label_next
from tlfs.pipeline.predict import PredictRequest, predict
from tests.conftest import noisy_images, write_tree
from tests.features.conftest import s3_server  # noqa: F401 - the fixture

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def head_of(noisy_set):
    """The noisy set's heads, fitted once for the module: softmax on `head` with both views."""
    feature_set, source, store = noisy_set
    result = fit(feature_set, ["head"], "softmax", views=["original", "flip"], **QUIET)
    return result["saved_to"].rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """36 images of the set's kind that it does not hold (another draw of the noise)."""
    return write_tree(tmp_path_factory.mktemp("pool"), {name.split("/", 1)[1]: data for name, data
                                                        in noisy_images(seed=7).items() if name.startswith("test/")})


def test_the_chosen_are_the_least_sure_of_the_pool_as_predict_scores_them(noisy_set, head_of, pool):
    feature_set, source, store = noisy_set
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool),), 6, head_of, store), **QUIET)
    assert list(chosen.columns) == CHOSEN_COLUMNS and chosen["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["already_stored"], summary["chosen"]) == (
        36, 36, 0, 0, 6)
    # the same probabilities as tlfs predict gives: the head's, averaged over its views
    predicted = {p.image: p for p in predict(PredictRequest("noisy", "efficientnet_lite0", (str(pool),), head_of, store),
                                             **QUIET)}
    for row in chosen.itertuples():
        assert row.label == predicted[row.image].label
        assert row.probability == pytest.approx(predicted[row.image].probability, rel=1e-5)
        assert row.margin == pytest.approx(row.probability - row.runner_up_probability, abs=1e-6)
    assert chosen["margin"].is_monotonic_increasing
    # asked for the whole pool, every image by margin: the least sure of all is the first chosen above
    every, _ = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool),), 36, head_of, store), **QUIET)
    assert every["margin"].is_monotonic_increasing and len(every) == 36
    assert chosen["image"].iloc[0] == every["image"].iloc[0]
    assert set(chosen["image"]) <= set(every["image"].iloc[:60])
    assert summary["median_margin_chosen"] < summary["median_margin_pool"]


def test_images_the_set_holds_and_broken_ones_are_told_and_not_chosen_and_the_counts_reconcile(noisy_set, head_of, pool,
                                                                                                tmp_path):
    feature_set, source, store = noisy_set
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    held = [str(source / f"test/red/{i:03d}.png") for i in range(3)] + [str(source / "train/blue/004.png")]
    said = []
    chosen, summary = label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(pool / "red"), str(broken), *held),
                                                  50, head_of, store), log=said.append)
    assert (summary["pool"], summary["scored"], summary["rejected"], summary["already_stored"], summary["chosen"]) == (
        17, 16, 1, 4, 12)
    assert not set(chosen["image"]) & {str(broken), *held}
    assert f"  {broken}: not scored (not a recognised image format)" in said
    told = [line for line in said if line.startswith("left out 4 images the set already holds")]
    assert told and f"{held[0]} = test/red/000.png" in told[0]
    with pytest.raises(PipelineError, match=r"every image scored is one .* already holds: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", tuple(held), 5, head_of, store), **QUIET)
    with pytest.raises(PipelineError, match=r"1 image given and none could be decoded: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 5, head_of, store), **QUIET)
    with pytest.raises(PipelineError, match="count 0: at least 1 image to choose"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", (str(broken),), 0, head_of, store), **QUIET)


def test_tlfs_label_next_prints_the_chosen_or_writes_them_and_draws_a_sheet(noisy_set, head_of, pool, capsys, tmp_path):
    feature_set, source, store = noisy_set
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "-n", "4", "--no-progress",
                 str(pool)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("1\t") and " or " in lines[0]
    assert json.loads(lines[-1])["chosen"] == 4
    out, sheet = tmp_path / "next.csv", tmp_path / "next.png"
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "--count", "5", "--no-progress",
                 "--output", str(out), "--sheet", str(sheet), str(pool)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["output"], summary["sheet"]) == (str(out), str(sheet))
    written = pd.read_csv(out)
    assert list(written.columns) == CHOSEN_COLUMNS and len(written) == 5
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(summary["chosen_by_predicted_class"].values()) == 5
    assert np.all(np.diff(written["margin"]) >= 0)


def test_the_fit_dags_task_saves_the_queue_beside_the_heads(noisy_set, head_of, pool):
    """``tasks.choose_next_to_label`` (the fit_heads DAG's label_next): the chosen images, least
    sure first, as _heads/label_next.csv, and their sheet, of the version the run fitted."""
    from pathlib import Path

    from tlfs.pipeline import tasks

    feature_set, source, store = noisy_set
    target = tasks.SetTarget("noisy", "efficientnet_lite0", store, feature_set.version)
    summary = tasks.choose_next_to_label(target, head_of, [str(pool / "green"), str(source / "test/red/001.png")], 4,
                                         **QUIET)
    assert (summary["scored"], summary["already_stored"], summary["chosen"]) == (13, 1, 4)
    saved = Path(summary["saved_to"])
    assert saved == Path(feature_set.uri) / "_heads" / "label_next.csv"
    queue = pd.read_csv(saved)
    assert list(queue.columns) == CHOSEN_COLUMNS and queue["rank"].tolist() == [1, 2, 3, 4]
    assert all(image.startswith(str(pool / "green")) for image in queue["image"])
    assert (saved.parent / "label_next.png").read_bytes()[:4] == b"\x89PNG"


def _pool_files(feature_set) -> dict[str, int]:
    from pathlib import Path

    folder = Path(feature_set.uri) / "_pool"
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*.parquet")} if folder.exists() else {}


def test_a_later_round_runs_only_new_or_changed_images_through_the_backbone_and_chooses_the_same(noisy_set, head_of,
                                                                                                 tmp_path):
    import dataclasses
    import os

    feature_set, source, store = noisy_set
    images = {name.split("/", 1)[1]: data for name, data in noisy_images(seed=11).items() if name.startswith("test/")}
    pool = write_tree(tmp_path / "round", images)
    request = LabelNextRequest("noisy", "efficientnet_lite0", (str(pool),), 8, head_of, store)
    first_said, second_said = [], []
    first, summary = label_next(request, log=first_said.append)
    assert summary["from_cache"] == 0 and "36 images through the backbone on cpu (fp32)" in first_said
    # the head's two views each keep their features
    assert sorted(name.split("-", 1)[0] for name in _pool_files(feature_set) if "-head-" in name) == ["flip", "original"]
    second, summary = label_next(request, log=second_said.append)
    assert summary["from_cache"] == 36 and not [line for line in second_said if "through the backbone" in line]
    pd.testing.assert_frame_equal(second, first)
    uncached, summary = label_next(dataclasses.replace(request, cache=False), **QUIET)
    assert summary["from_cache"] == 0
    pd.testing.assert_frame_equal(uncached, first)
    # one image replaced by another's pixels, one added: only those two go through the backbone again
    changed = pool / "red" / "000.png"
    changed.write_bytes(images["green/001.png"])
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    (pool / "blue" / "new.png").write_bytes(images["red/002.png"])
    third_said = []
    third, summary = label_next(dataclasses.replace(request, count=37), log=third_said.append)
    assert (summary["scored"], summary["from_cache"]) == (37, 35)
    assert "2 images through the backbone on cpu (fp32)" in third_said
    pd.testing.assert_frame_equal(third, label_next(dataclasses.replace(request, count=37, cache=False), **QUIET)[0])


def test_kept_features_that_cannot_be_read_are_told_and_the_pool_run_again(noisy_set, head_of, pool):
    from pathlib import Path

    feature_set, source, store = noisy_set
    request = LabelNextRequest("noisy", "efficientnet_lite0", (str(pool / "blue"),), 3, head_of, store)
    before, _ = label_next(request, **QUIET)
    kept = Path(feature_set.uri) / "_pool"
    for name in _pool_files(feature_set):
        (kept / name).write_bytes(b"PAR1 cut short")
    said = []
    after, summary = label_next(request, log=said.append)
    assert summary["from_cache"] == 0
    assert [line for line in said if line.startswith("note: the pool's kept features in") and "could not be read" in line]
    pd.testing.assert_frame_equal(after, before)
    assert label_next(request, **QUIET)[1]["from_cache"] == 12  # kept again, whole


def test_tlfs_label_next_no_cache_neither_reads_nor_keeps_the_pools_features(noisy_set, head_of, capsys, tmp_path):
    feature_set, source, store = noisy_set
    pool = write_tree(tmp_path / "fresh", {name.split("/", 1)[1]: data for name, data
                                           in noisy_images(seed=12).items() if name.startswith("test/green")})
    before = _pool_files(feature_set)
    assert main(["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "-n", "2", "--no-progress",
                 "--no-cache", str(pool)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["from_cache"] == 0
    assert _pool_files(feature_set) == before


@pytest.mark.slow
def test_a_pool_on_s3_is_found_again_by_each_objects_etag_whether_listed_as_a_folder_or_a_glob(noisy_set, head_of,
                                                                                               s3_server, tmp_path):
    import dataclasses

    import fsspec

    feature_set, source, store = noisy_set
    images = {name.split("/", 1)[1]: data for name, data in noisy_images(seed=13).items() if name.startswith("test/")}
    fs = fsspec.filesystem("s3")
    fs.put(str(write_tree(tmp_path / "pool", images)) + "/", "tlfs-test/incoming/", recursive=True)
    request = LabelNextRequest("noisy", "efficientnet_lite0", ("s3://tlfs-test/incoming",), 5, head_of, store)
    first, summary = label_next(request, **QUIET)
    assert (summary["scored"], summary["from_cache"]) == (36, 0)
    globbed, summary = label_next(dataclasses.replace(request, images=("s3://tlfs-test/incoming/*/*.png",)), **QUIET)
    assert summary["from_cache"] == 36
    pd.testing.assert_frame_equal(globbed, first)
    fs.pipe("tlfs-test/incoming/red/000.png", images["blue/000.png"])  # another object under the same name
    said = []
    assert label_next(request, log=said.append)[1]["from_cache"] == 35
    assert "1 image through the backbone on cpu (fp32)" in said


@pytest.mark.slow
def test_rounds_of_labelling_through_the_cli_extract_only_the_labelled_and_score_the_rest_from_the_kept_features(
        lite0, models_root, tmp_path, capsys):
    """The loop a labelling team runs: label-next chooses, a person files the chosen images under
    their classes, extract adds only them, fit learns from them, and the next label-next sends
    none of the rest of the pool through the backbone again."""
    import shutil

    source = write_tree(tmp_path / "images", noisy_images(per_class=4, seed=20))
    unlabelled = {name: data for name, data in noisy_images(per_class=8, seed=21).items() if name.startswith("train/")}
    files = {f"{colour}-{number}": data for (_, colour, number), data  # named so the person can tell, the tools not
             in ((name.split("/"), data) for name, data in unlabelled.items())}
    write_tree(tmp_path / "pool", files)
    common = ["--dataset", "loop", "--store", str(tmp_path / "store"), "--no-progress"]
    pool = str(tmp_path / "pool")

    def run(*args) -> dict:
        assert main([*args]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    run("extract", *common, "--source", str(source), "--models", models_root)
    run("fit", "--dataset", "loop", "--store", str(tmp_path / "store"), "--layer", "head")
    first = run("label-next", *common, "--head", "softmax-head", "-n", "6", "--output", str(tmp_path / "next.csv"), pool)
    assert (first["scored"], first["from_cache"]) == (24, 0)
    chosen = pd.read_csv(tmp_path / "next.csv")["image"].tolist()
    for image in chosen:  # the person labels them: each filed under its class in the training split
        name = image.rsplit("/", 1)[1]
        shutil.move(image, source / "train" / name.split("-")[0] / name)
    extracted = run("extract", *common, "--source", str(source), "--models", models_root)
    assert extracted["images_extracted"] == 6 and extracted["counts"]["train"]["written"] == 18
    run("fit", "--dataset", "loop", "--store", str(tmp_path / "store"), "--layer", "head")
    second = run("label-next", *common, "--head", "softmax-head", "-n", "6", "--output", str(tmp_path / "next.csv"),
                 pool)
    assert (second["scored"], second["from_cache"], second["already_stored"]) == (18, 18, 0)
    assert not set(pd.read_csv(tmp_path / "next.csv")["image"]) & set(chosen)


def test_images_of_an_earlier_queue_are_not_chosen_again_and_the_counts_reconcile(noisy_set, head_of, pool, capsys,
                                                                                 tmp_path):
    feature_set, source, store = noisy_set
    queue = tmp_path / "sent.parquet"  # the batch with the people labelling it
    common = ["label-next", "--dataset", "noisy", "--head", head_of, "--store", store, "--no-progress"]
    assert main([*common, "-n", "5", "--output", str(queue), str(pool)]) == 0
    sent = set(pd.read_parquet(queue)["image"])
    capsys.readouterr()
    assert main([*common, "-n", "5", "--output", str(tmp_path / "next.csv"), "--exclude", str(queue), str(pool)]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert not set(pd.read_csv(tmp_path / "next.csv")["image"]) & sent
    assert (summary["pool"], summary["excluded"], summary["scored"], summary["rejected"]) == (36, 5, 31, 0)
    assert f"left out 5 images of {queue} (5 listed there)" in err
    # a table without an image column, a file that is not a table, and a queue of every image: one line each
    (tmp_path / "other.csv").write_text("path,label\nx.jpg,red\n")
    for table, said in ((tmp_path / "other.csv", "no 'image' column (its columns: path, label)"),
                        (tmp_path / "sent.txt", "not a table (a .csv, .parquet or .jsonl file)"),
                        (tmp_path / "missing.csv", "no such file")):
        assert main([*common, "--exclude", str(table), str(pool)]) == 1
        assert f"{table}: {said}" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="every image listed is in .*sent.parquet: nothing to choose from"):
        label_next(LabelNextRequest("noisy", "efficientnet_lite0", tuple(sorted(sent)), 2, head_of, store,
                                    exclude=(str(queue),)), **QUIET)
