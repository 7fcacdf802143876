"""A dataset's sources, given once: a later run of it (another backbone, a fine-tuning run,
an incremental extraction) reads those its newest set was extracted from, as they were
given (a glob still a glob, options still in the fragment), and says so."""

import json
from pathlib import Path

import pytest

from tlfs import features
from tlfs.pipeline.cli import main
from tlfs.pipeline.config import load_settings
from tlfs.pipeline.dataset_sources import sources_for
from tlfs.pipeline.errors import PipelineError
from tests.conftest import folder_images, write_tar, write_tree
from tests.extraction import run_extract

QUIET = {"log": lambda *_: None}


def test_a_dataset_given_a_glob_once_reads_it_again_and_finds_what_it_matches_now(tmp_path, lite0, models_root,
                                                                                   monkeypatch, capsys):
    files = folder_images(per_class=2)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "a.tar", {k: v for k, v in files.items() if "/red/" in k})
    store = str(tmp_path / "store")
    glob = f"{shards}/*.tar"
    run_extract("shards", [glob], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    write_tar(shards / "b.tar", {k: v for k, v in files.items() if "/red/" not in k})  # the glob matches one more

    said = []
    assert sources_for(load_settings(store=store), "shards", None, said.append) == [glob]
    first = features.open_set("shards", "efficientnet_lite0", store=store)
    assert said == [f"reading the sources {glob} that {first.uri} (version 1) was extracted from (--source names others)"]
    monkeypatch.setenv("TLFS_MODELS", models_root)
    assert main(["extract", "--dataset", "shards", "--store", store, "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["version"] == 2 and summary["changes"]["added"] == len(files) // 3 * 2  # only b.tar's images
    assert summary["changes"]["reused"] == len(files) // 3
    assert main(["describe", "--dataset", "shards", "--store", store]) == 0
    shown = capsys.readouterr().out.splitlines()
    sources = [line for line in shown if line.startswith("source ")]  # each file, and the glob as it was given
    assert len(sources) == 2 and "/a.tar" in sources[0] and "/b.tar" in sources[1]
    assert f"given as      {glob}  (what a later run reads where no --source is given)" in shown


def test_options_given_in_the_fragment_are_given_again(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "pets", {k.split("/", 1)[1]: v for k, v in folder_images(per_class=5).items()
                                            if k.startswith("train/")})  # <class>/<image>
    store = str(tmp_path / "store")
    run_extract("pets", [f"{source}#holdout=0.2"], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    assert sources_for(load_settings(store=store), "pets", None, **QUIET) == [f"{source}#holdout=0.2"]
    # a set committed before the URIs were kept as given: its sources, with their options
    manifest = Path(features.open_set("pets", "efficientnet_lite0", store=store).uri) / "_manifest.json"
    data = json.loads(manifest.read_text())
    del data["lineage"]["source_uris"]
    manifest.write_text(json.dumps(data))
    assert sources_for(load_settings(store=store), "pets", None, **QUIET) == [f"{source}#holdout=0.2"]


def test_sources_given_win_cifar10_keeps_its_default_and_a_dataset_never_extracted_needs_them(tmp_path):
    settings = load_settings(store=str(tmp_path / "store"))
    assert sources_for(settings, "pets", ["elsewhere/"], **QUIET) == ["elsewhere/"]
    assert sources_for(settings, "cifar10", None, **QUIET) == list(settings.cifar10_source)
    with pytest.raises(PipelineError, match=r"dataset 'pets' needs --source URI \(only cifar10 has a default source\)"):
        sources_for(settings, "pets", None, **QUIET)
