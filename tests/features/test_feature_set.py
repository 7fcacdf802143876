"""features.open_set: one handle, one commit."""

import numpy as np
import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.lock import commit_lock
from tlfs.features.manifest import commit
from tlfs.features.versions import vacuum
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


def test_a_handle_keeps_reading_its_own_commit_after_a_newer_one_until_that_is_vacuumed(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    old = features.open_set("ds", "bb", store=store)
    plan = "q" * 16
    newer = write_shard(layout.shard_uri(root, "l1", "train", plan, 0),
                        shard_table(["train/a/9.png"], np.zeros(1), ["a"], np.full((1, 3), 7, np.float32)))
    commit(root, {**manifest, "plan_id": plan, "rows": 1, "counts": {"train": {"read": 1, "written": 1, "rejected": 0}},
                  "shards": [{**manifest["shards"][0], "path": newer.uri[len(root) + 1:], "rows": 1, "bytes": newer.bytes,
                              "sha256": newer.sha256}]})
    # the newer commit moved the old files out of the layer folder; the old handle still finds them
    np.testing.assert_array_equal(old.matrix("l1", "train")[0], matrix)
    assert old.files("l1", "train")[0].startswith(f"{root}/{layout.RETIRED}/")
    assert features.open_set("ds", "bb", store=store).matrix("l1", "train")[0].tolist() == [[7, 7, 7]]
    assert len(features.load("ds", "bb", "l1", "train", store)) == 1
    with commit_lock(root):
        vacuum(root, features.open_set("ds", "bb", store=store).manifest, features.Retention(versions=1, days=None))
    with pytest.raises(features.SetReplaced, match="vacuumed"):  # never a mix of versions
        old.matrix("l1", "train")


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


def test_a_backbone_version_picks_that_exact_set_and_a_version_number_one_of_its_commits(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    assert features.open_set("ds", "bb-1234", store=store).backbone_version == "bb-1234"
    with pytest.raises(features.NotCommitted, match=r"'bb-9999' in .*; 'ds' has sets of bb-1234 \(tlfs ls\)"):
        features.open_set("ds", "bb-9999", store=store)
    with pytest.raises(features.NotCommitted, match=r"dataset 'dss' .*; it has sets of ds \(tlfs ls\)"):
        features.open_set("dss", "bb", store=store)
    with pytest.raises(features.NotCommitted, match=r"it has none yet \(tlfs extract --dataset ds commits one\)"):
        features.open_set("ds", "bb", store=str(tmp_path / "empty"))
    assert features.open_set("ds", "bb", store=store, version=1).version == 1
    with pytest.raises(features.NotCommitted, match="has no version 2; it has 1"):
        features.open_set("ds", "bb", store=store, version=2)


def test_a_process_that_reads_features_exits_with_status_0(tmp_path):
    """Arrow's thread pool, still busy at interpreter exit, aborted about one such process in
    four (status 134) after its work was done; the shard files are read on the calling thread."""
    import subprocess
    import sys

    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    script = "from tlfs import features; features.open_set('ds', 'bb', store=%r).matrix('l1', 'train')" % store
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True) for _ in range(8)]
    assert [run.returncode for run in runs] == [0] * 8, [run.stderr[-300:] for run in runs if run.returncode]


def test_a_relative_store_that_is_not_there_is_named_with_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    """A notebook started in another folder than the store's finds none at the default tlfs-data/store."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(features.NotCommitted, match=f"in tlfs-data/store; there is no store there, relative to "
                                                    f"{tmp_path} \\(set TLFS_STORE, or give store=, to the store's path\\)"):
        features.open_set("ds", "bb", store="tlfs-data/store")
