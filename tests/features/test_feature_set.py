"""features.open_set: one handle, one commit."""

import numpy as np
import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.manifest import commit
from tlfs.features.schema import shard_table
from tlfs.features.writer import write_shard
from tests.features.test_store import make_set


def test_a_handle_reads_matrices_frames_and_files_of_its_commit(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    fs = features.open_set("ds", "bb", store=store)
    assert (fs.dataset, fs.backbone_version, fs.layers, fs.splits) == ("ds", "bb-1234", {"l1": 3}, ["train"])
    X, y, ids = fs.matrix("l1", "train")
    np.testing.assert_array_equal(X, matrix)
    assert list(fs.frame("l1", "train").columns) == ["image_id", "label", "label_name", "split", "features"]
    assert fs.files("l1", "train") == [f"{root}/{manifest['shards'][0]['path']}"]
    with pytest.raises(features.StoreError, match="split 'test' is not in"):
        fs.matrix("l1", "test")


def test_a_handle_never_reads_a_newer_commit(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    old = features.open_set("ds", "bb", store=store)
    plan = "q" * 16
    newer = write_shard(layout.shard_uri(root, "l1", "train", plan, 0),
                        shard_table(["train/a/9.png"], np.zeros(1), ["a"], np.full((1, 3), 7, np.float32)))
    commit(root, {**manifest, "plan_id": plan, "rows": 1, "counts": {"train": {"read": 1, "written": 1, "rejected": 0}},
                  "shards": [{**manifest["shards"][0], "path": newer.uri[len(root) + 1:], "rows": 1, "bytes": newer.bytes,
                              "sha256": newer.sha256}]})
    # the newer commit removed the old plan's files: the old handle says so, never mixes
    with pytest.raises(features.SetReplaced, match="was replaced by a newer commit"):
        old.matrix("l1", "train")
    assert features.open_set("ds", "bb", store=store).matrix("l1", "train")[0].tolist() == [[7, 7, 7]]
    assert len(features.load("ds", "bb", "l1", "train", store)) == 1


def test_several_layers_side_by_side_must_hold_the_same_rows(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    second = write_shard(layout.shard_uri(root, "l2", "train", manifest["plan_id"], 0),
                         shard_table([f"train/a/{i}.png" for i in range(4)], np.zeros(4), ["a"] * 4, np.ones((4, 2), np.float32)))
    manifest["layers"]["l2"] = 2
    manifest["shards"].append({"layer": "l2", "split": "train", "shard": 0, "path": second.uri[len(root) + 1:],
                               "rows": 4, "bytes": second.bytes, "sha256": second.sha256})
    commit(root, manifest)
    X, y, ids = features.open_set("ds", "bb-1234", store=store).matrices(["l1", "l2"], "train")
    assert X.shape == (4, 5) and list(ids) == [f"train/a/{i}.png" for i in range(4)]


def test_a_version_picks_that_exact_commit_of_the_backbone(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    assert features.open_set("ds", "bb", version="bb-1234", store=store).backbone_version == "bb-1234"
    with pytest.raises(features.NotCommitted, match="'bb-9999'"):
        features.open_set("ds", "bb", version="bb-9999", store=store)
    with pytest.raises(features.StoreError, match="is a version of bb, not of other"):
        features.open_set("ds", "other", version="bb-1234", store=store)
