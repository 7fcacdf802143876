"""Deleting a whole feature set (``tlfs rm``): it says what the set holds and deletes it only
when told to, the commit point first; a set a run is working on is refused, nothing deleted."""

import json
from pathlib import Path

import pytest

from tests.conftest import folder_images, write_tree
from tests.extraction import run_extract
from tests.features.conftest import s3_server  # noqa: F401 - the fixture
from tlfs import features
from tlfs.features.errors import NotCommitted
from tlfs.features.leases import LeaseTerms, hold
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.maintenance import remove_set


@pytest.fixture
def two_sets(tmp_path, lite0, models_root):
    """Two datasets' sets in one store: (store, the first set's folder)."""
    store = str(tmp_path / "store")
    for name in ("colors", "kept"):
        source = write_tree(tmp_path / name, folder_images(per_class=1))
        run_extract(name, [str(source)], "efficientnet_lite0", store, models_root, show_progress=False)
    return store, Path(features.find_set("colors", "efficientnet_lite0", store)[0])


def test_a_set_is_described_without_yes_and_deleted_with_it_leaving_the_other_sets(two_sets, capsys):
    store, root = two_sets
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert main(["rm", "--dataset", "colors", "--store", store]) == 1
    said = capsys.readouterr().err
    assert f"{root}: version 1, 6 rows, " in said and "would be deleted: run it again with --yes" in said
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files  # nothing deleted
    assert main(["rm", "--dataset", "colors", "--store", store, "--yes"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["removed"] is True and report["files"] >= len(files) - 1 and report["rows"] == 6
    assert f"deleted {root}: version 1, 6 rows" in out.err
    assert not root.parent.exists()  # the dataset's folder went with its last set
    with pytest.raises(NotCommitted):
        features.open_set("colors", "efficientnet_lite0", store=store)
    assert len(features.load("kept", "efficientnet_lite0", "head", "train", store)) == 3
    assert main(["rm", "--dataset", "colors", "--store", store, "--yes"]) == 1  # gone: told as for any command
    assert "no committed feature set for dataset 'colors'" in capsys.readouterr().err


def test_a_set_a_run_is_working_on_is_refused_and_nothing_is_deleted(two_sets):
    store, root = two_sets
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with hold(str(root), "a" * 16, LeaseTerms(ttl=60), plan_must_exist=False):
        with pytest.raises(PipelineError, match=r"a run is working on it \(plan a{16} holds a live lease\); nothing removed"):
            remove_set(str(root), confirmed=True)
    assert all(path.exists() for path in files)
    assert features.open_set("colors", "efficientnet_lite0", store=store).rows == 6


def test_a_set_on_an_object_store_is_deleted_whole(two_sets, s3_server):
    import fsspec

    _, root = two_sets
    fs = fsspec.filesystem("s3")
    fs.put(str(root.parent.parent) + "/", "tlfs-test/rm/", recursive=True)
    uri = features.find_set("colors", "efficientnet_lite0", "s3://tlfs-test/rm")[0]
    assert remove_set(uri, confirmed=True)["removed"] is True
    assert fs.find("tlfs-test/rm/colors") == [] and fs.find("tlfs-test/rm/kept")
    with pytest.raises(NotCommitted):
        features.open_set("colors", "efficientnet_lite0", store="s3://tlfs-test/rm")
