"""The plan as typed values: what plan.json holds, read back whole."""

from tlfs.pipeline import extract
from tlfs.pipeline.plan import ExtractionRequest, Plan, Shard


def test_a_saved_plan_reads_back_as_the_same_typed_plan(tmp_path, folder_dataset, lite0, models_root):
    request = ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", str(tmp_path / "store"), models_root,
                                layers=("block2", "head"), shard_size=4)
    p = extract.plan_task(request, log=lambda *_: None)
    back = extract.load_plan(p.set_uri, p.plan_id)
    assert isinstance(back, Plan) and back.to_json() == p.to_json()
    assert back.layers == ("block2", "head") and back.layer_dims == {"block2": 24, "head": 1280}
    assert back.shards[0] == Shard(0, back.shards[0].split, 0, 4)
    assert back.images == sum(len(back.shard_entries(s.number)) for s in back.shards) == sum(s.images for s in back.shards)
    assert [back.shard_entries(s.number) for s in back.shards] == [p.shard_entries(s.number) for s in p.shards]
    assert [e.split for e in back.shard_entries(0)] == [back.shards[0].split] * 4
    assert back.runtime == request.runtime and back.input_size == 224


def test_the_same_request_makes_the_same_plan_id_and_another_shard_size_another(tmp_path, folder_dataset, lite0, models_root):
    request = ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", str(tmp_path / "store"), models_root)
    quiet = lambda *_: None  # noqa: E731
    assert extract.plan(request, quiet).plan_id == extract.plan(request, quiet).plan_id
    from dataclasses import replace

    assert extract.plan(replace(request, shard_size=3), quiet).plan_id != extract.plan(request, quiet).plan_id


def test_a_plan_keeps_its_codec_and_a_plan_saved_before_the_choice_reads_back_as_lz4(tmp_path, folder_dataset, lite0,
                                                                                      models_root):
    """The codec fixes the plan's files, so another codec is another plan (another staging); the
    default keeps the ids plans had before there was a choice."""
    from dataclasses import replace

    quiet = lambda *_: None  # noqa: E731
    request = ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", str(tmp_path / "store"), models_root)
    default, zstd = extract.plan(request, quiet), extract.plan(replace(request, codec="zstd"), quiet)
    assert (default.codec, zstd.codec) == ("lz4", "zstd") and default.plan_id != zstd.plan_id
    assert Plan.from_json(zstd.to_json()).codec == "zstd"
    saved_before = {k: v for k, v in default.to_json().items() if k != "codec"}
    assert Plan.from_json(saved_before).codec == "lz4"


def test_an_unknown_codec_is_refused_before_any_work(tmp_path):
    import pytest

    from tlfs.pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="unknown codec 'gzip': one of lz4, zstd, none"):
        ExtractionRequest("colors", ("x",), "efficientnet_lite0", str(tmp_path / "store"), str(tmp_path), codec="gzip")


def test_planning_on_an_exported_version_imports_no_torch(tmp_path, folder_dataset, lite0, models_root):
    """torch takes seconds to import and planning a run on a version already exported
    needs none of it (the backbone's spec and its weights' sha256 name the version)."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from tlfs.pipeline import extract\n"
              "from tlfs.pipeline.plan import ExtractionRequest\n"
              f"request = ExtractionRequest('colors', ({str(folder_dataset)!r},), 'efficientnet_lite0', "
              f"{str(tmp_path / 'store')!r}, {models_root!r})\n"
              "p = extract.plan(request, lambda *_: None)\n"
              "print(p.backbone_version, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.split() == [lite0.version, "False"]


def test_shards_begin_with_a_compressed_archive_but_cut_anywhere_through_one_read_by_offset(tmp_path):
    from tests.conftest import folder_images, write_tar
    from tlfs.pipeline.indexing import build_index

    files = folder_images(per_class=2, splits=("train",))  # 6 images
    names = sorted(files)
    for suffix, mode in ((".tar.gz", "w:gz"), (".tar", "w")):
        for part in range(3):
            write_tar(tmp_path / f"p{part}{suffix}", {n: files[n] for n in names[2 * part:2 * part + 2]}, mode)
        index = build_index("c", [str(tmp_path / f"p*{suffix}")])
        shards, entries = extract.cut_shards(index, 3)
        sizes = [s.images for s in shards]
        if mode == "w:gz":  # 2 + 2 would straddle an archive: each archive begins a shard
            assert sizes == [2, 2, 2] and all(len({e.source for e in entries[n]}) == 1 for n in entries)
        else:
            assert sizes == [3, 3]
        assert [e for n in sorted(entries) for e in entries[n]] == index.entries


def test_a_missing_source_is_told_before_the_backbone_is_exported(tmp_path):
    """A mistyped path fails in a moment: nothing is exported (which takes seconds, and
    minutes for a large backbone) and nothing is written to the model store."""
    import pytest

    from tlfs.pipeline.errors import SourceError

    models = tmp_path / "models"
    for sources, reason in (((str(tmp_path / "nope.tar.gz"),), "nope.tar.gz: no such file"),
                            ((str(tmp_path / "shard-*.tar"),), "matches no file"),
                            ((), "has no source")):
        request = ExtractionRequest("x", sources, "efficientnet_lite0", str(tmp_path / "store"), str(models))
        with pytest.raises(SourceError, match=reason):
            extract.plan(request, lambda *_: None)
    assert not models.exists() and not (tmp_path / "store").exists()


def test_planning_names_the_image_files_the_dataset_leaves_out(tmp_path, lite0, models_root):
    from tests.conftest import folder_images, write_tree

    source = write_tree(tmp_path / "images", {**folder_images(), "train/red/2024/x.png": b"x"})
    said = []
    p = extract.plan(ExtractionRequest("colors", (str(source),), "efficientnet_lite0", str(tmp_path / "store"), models_root),
                     said.append)
    assert p.images == 24
    indexed = next(line for line in said if line.startswith("indexed "))
    assert indexed.endswith(f"; 1 image file left out, not at <split>/<class>/<file>: {source}/train/red/2024/x.png")


def test_planning_says_when_the_dataset_lacks_the_splits_heads_need(tmp_path, lite0, models_root):
    """A folder of training images alone extracts, and planning says at once that heads
    and fine-tuning will need a test split too (not after the extraction, when `tlfs fit` refuses)."""
    from dataclasses import replace

    from tests.conftest import folder_images, write_tree

    source = write_tree(tmp_path / "images", {k: v for k, v in folder_images().items() if k.startswith("train/")})
    request = ExtractionRequest("colors", (str(source),), "efficientnet_lite0", str(tmp_path / "store"), models_root)
    said = []
    extract.plan(request, said.append)
    indexed = next(line for line in said if line.startswith("indexed "))
    assert indexed.startswith("indexed 12 images of colors (train 12) in ")
    assert indexed.endswith("; fitting heads and fine-tuning need a train and a test split, and it has no test "
                            "(an image folder is <split>/<class>/<image>; a source given as URI#holdout=0.2 holds a test "
                            "split out of its train images)")
    said.clear()
    extract.plan(replace(request, splits=("train",)), said.append)  # asked for by name: nothing to say
    assert "split" not in next(line for line in said if line.startswith("indexed ")).split(" in ")[-1]


def test_planning_says_when_the_features_will_not_fit_the_stores_disk(tmp_path, lite0, models_root, monkeypatch):
    """Before an hour of extraction, not at its end: the run's features against the free
    space of the store's disk (an object store does not fill up: nothing to say)."""
    from dataclasses import replace

    from tlfs.features.schema import estimated_bytes
    from tlfs.features.storage import free_bytes
    from tlfs.pipeline import planning
    from tests.conftest import folder_images, write_tree

    source = write_tree(tmp_path / "images", folder_images())  # 12 images a split
    request = ExtractionRequest("colors", (str(source),), "efficientnet_lite0", str(tmp_path / "store"), models_root,
                                layers=("block15", "head"))
    needed = estimated_bytes(24, [320, 1280])
    assert needed == 24 * (2 * 1600 + 2 * 16)
    assert free_bytes(str(tmp_path / "store" / "colors")) > needed  # the real disk, through a folder not made yet
    said = []
    extract.plan(request, said.append)
    assert not [line for line in said if "free" in line]

    monkeypatch.setattr(planning, "free_bytes", lambda uri: needed - 1)
    said.clear()
    extract.plan(request, said.append)
    assert f"the run writes about {needed / 1e6:.1f} MB of features and the store's disk has " \
           f"{(needed - 1) / 1e6:.1f} MB free: it will stop when the disk is full, keeping the shards it finished" in said
    said.clear()
    extract.plan(replace(request, views=("original", "flip")), said.append)  # twice the rows
    assert any(f"about {2 * needed / 1e6:.1f} MB" in line for line in said)

    monkeypatch.setattr(planning, "free_bytes", lambda uri: None)  # an object store
    said.clear()
    extract.plan(request, said.append)
    assert not [line for line in said if "free" in line]
