"""Incremental runs: a run over a changed source extracts only the new and changed
images, drops the removed ones, reuses every unchanged image's stored features, and
ends with a set equal, row for row, to a from-scratch extraction of the new source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tlfs import features
from tlfs.features.versions import Retention
from tlfs.pipeline import extract
from tests.conftest import folder_images, int8_graph_built_again, png_bytes, write_tree
from tests.extraction import run_extract

LAYERS = ["block2", "head"]


def run(source, store, models, **kw):
    return run_extract("inc", [str(source)], "efficientnet_lite0", str(store), models, layers=LAYERS, show_progress=False,
                       log=lambda *_: None, **{"shard_size": 4, "batch_size": 4, **kw})


def rows(store, split="train", layer="head", **at) -> dict[str, np.ndarray]:
    frame = features.load("inc", "efficientnet_lite0", layer, split, str(store), **at)
    return dict(zip(frame["image_id"], frame["features"]))


def assert_same_rows(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for image_id in a:  # batches differ between the runs: float16 features agree to rounding
        np.testing.assert_allclose(a[image_id].astype(np.float32), b[image_id].astype(np.float32), atol=2e-3, rtol=1e-2)


@pytest.fixture
def files():
    return folder_images(per_class=4)  # 12 train + 12 test images, 3 classes


def change(root, add: dict[str, bytes] = {}, remove: tuple[str, ...] = ()):
    """The source folder changed in place, as a user's folder does."""
    write_tree(root, add)
    for name in remove:
        (root / name).unlink()
    return root


def test_added_images_are_the_only_ones_extracted_and_the_rest_are_reused_byte_for_byte(tmp_path, files, lite0, models_root):
    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    first = run(source, store, models_root)
    before = rows(store)
    second = run(change(source, {f"train/red/new{i}.png": png_bytes((200 + i, 10, 10)) for i in range(3)}), store, models_root)
    assert (first["version"], second["version"]) == (1, 2)
    assert second["images_extracted"] == second["images_computed"] == 3  # the reused shards are not read again
    assert {k: second["changes"][k] for k in ("base_version", "added", "changed", "removed", "reused")} == \
        {"base_version": 1, "added": 3, "changed": 0, "removed": 0, "reused": 24}
    after = rows(store)
    assert all(after[i].tobytes() == before[i].tobytes() for i in before)  # reused: the very bytes stored before
    scratch = run(source, tmp_path / "scratch", models_root, incremental=False)
    assert scratch["images_extracted"] == 27
    assert_same_rows(after, rows(tmp_path / "scratch"))


def test_an_incremental_plan_stages_what_it_changed_and_the_next_run_builds_on_it(tmp_path, files, lite0, models_root):
    """A reused shard's record is the plan's (nothing saved for it), every shard's entries
    are one file, and the commit gathers the records of the shards the run wrote into one:
    the staging a commit leaves, and the next one removes, is three files."""
    from tlfs.features import layout

    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    second = run(change(source, {f"train/red/new{i}.png": png_bytes((200 + i, 10, 10)) for i in range(3)}), store, models_root)
    manifest = features.describe("inc", "efficientnet_lite0", str(store))
    staging = store / "inc" / second["backbone_version"] / layout.STAGING / manifest["plan_id"]
    assert sorted(p.name for p in staging.iterdir() if p.name != layout.LEASES) == \
        ["entries.jsonl.gz", "plan.json", "records.jsonl"]
    assert second["shards_reused"] == 6 and len((staging / "records.jsonl").read_text().splitlines()) == 1  # the new shard's
    third = run(change(source, {"test/blue/new.png": png_bytes((0, 0, 222))}), store, models_root)
    assert third["images_extracted"] == 1 and third["changes"]["reused"] == 27  # the reused shards' records carried on
    assert [p.name for p in (staging.parent).iterdir()] == [features.describe("inc", "efficientnet_lite0", str(store))["plan_id"]]
    run(source, tmp_path / "scratch", models_root, incremental=False)
    assert_same_rows(rows(store, "test"), rows(tmp_path / "scratch", "test"))


def test_the_reused_shards_are_checked_in_one_listing_of_the_set_not_file_by_file(tmp_path, files, lite0, models_root,
                                                                                  monkeypatch):
    """On an object store a lookup is a request or two: a run adding 1 % of the images
    must not make two per file of the set to find its reused shards there."""
    from tlfs.features import versions

    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    listings = []
    real_init = versions.Listing.__init__
    monkeypatch.setattr(versions.Listing, "__init__", lambda self, root, *newest: listings.append(root) or real_init(self, root, *newest))

    def no_lookups(*_):
        raise AssertionError("a reused shard's file was looked up on its own")

    monkeypatch.setattr(versions, "locate", no_lookups)
    second = run(change(source, {"train/red/new.png": png_bytes((201, 10, 10))}), store, models_root)
    assert second["images_extracted"] == 1 and second["shards_reused"] == 6
    assert len(listings) == 2  # the run's, and the commit's


def test_the_commit_takes_the_manifest_planning_read_where_its_bytes_are_unchanged(tmp_path, files, lite0, models_root,
                                                                                     monkeypatch):
    """Parsing the newest manifest is a commit's one cost that grows with the set: a run
    whose planning read it does not parse it again where the file holds the same bytes."""
    from tlfs.features import versions

    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    reused = []
    real = versions.read_newest

    def spy(set_root, known=None):
        found = real(set_root, known)
        reused.append(known is not None and found is known)
        return found

    monkeypatch.setattr(versions, "read_newest", spy)
    second = run(change(source, {"train/red/new.png": png_bytes((201, 10, 10))}), store, models_root)
    assert second["images_extracted"] == 1
    assert reused == [False, True]  # read by planning, taken as it was by the commit


def _first_run_rewritten(tmp_path, files, models_root, rewrite) -> dict:
    """A set's first run, its plan's saved entries rewritten by ``rewrite(staging, lines,
    saved)`` (each shard's line, and ``plan.json``) as an older version saved them, then a
    run adding one image: its summary."""
    import gzip
    import json

    from tlfs.features import layout

    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    first = run(source, store, models_root)
    plan_id = features.describe("inc", "efficientnet_lite0", str(store))["plan_id"]
    staging = store / "inc" / first["backbone_version"] / layout.STAGING / plan_id
    saved = json.loads((staging / "plan.json").read_text())
    data = (staging / "entries.jsonl.gz").read_bytes()
    assert gzip.decompress(data).count(b"\n") == len(saved["entries_at"])  # a gzip member per line: zcat reads it whole
    lines = [gzip.decompress(data[start:start + length]) for start, length in saved["entries_at"]]
    (staging / "entries.jsonl.gz").unlink()
    (staging / "plan.json").write_text(json.dumps(rewrite(staging, lines, {k: v for k, v in saved.items()
                                                                           if k not in ("entries_at", "entries_format")})))
    return run(change(source, {"train/red/new.png": png_bytes((201, 10, 10))}), store, models_root)


def test_a_plan_saved_with_a_file_of_entries_per_shard_is_still_built_on(tmp_path, files, lite0, models_root):
    """Sets whose plan saved ``entries/NNNNN.json`` (before ``entries.jsonl``) are reused as ever."""
    def per_shard(staging, lines, saved):
        (staging / "entries").mkdir()
        for number, line in enumerate(lines):
            (staging / "entries" / f"{number:05d}.json").write_bytes(line)
        return saved

    second = _first_run_rewritten(tmp_path, files, models_root, per_shard)
    assert second["images_extracted"] == 1 and second["changes"]["reused"] == 24


def test_a_plan_saved_with_uncompressed_entries_is_still_built_on(tmp_path, files, lite0, models_root):
    """Sets whose plan saved ``entries.jsonl`` uncompressed (before ``entries.jsonl.gz``) are reused as ever."""
    def uncompressed(staging, lines, saved):
        at, offset = [], 0
        for line in lines:
            at.append([offset, len(line)])
            offset += len(line)
        (staging / "entries.jsonl").write_bytes(b"".join(lines))
        return {**saved, "entries_at": at}

    second = _first_run_rewritten(tmp_path, files, models_root, uncompressed)
    assert second["images_extracted"] == 1 and second["changes"]["reused"] == 24


def test_replaced_and_removed_images_are_re_extracted_and_dropped_exactly(tmp_path, files, lite0, models_root):
    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    replaced, removed = "train/blue/000.png", "train/green/001.png"
    second = run(change(source, {replaced: png_bytes((250, 250, 0))}, [removed]), store, models_root)
    assert second["images_extracted"] == 1
    assert {k: second["changes"][k] for k in ("added", "changed", "removed", "reused")} == \
        {"added": 0, "changed": 1, "removed": 1, "reused": 22}
    assert second["shards_derived"] >= 1  # a shard that held them was copied without their rows
    after = rows(store)
    assert removed not in after and replaced in after
    run(source, tmp_path / "scratch", models_root, incremental=False)
    assert_same_rows(after, rows(tmp_path / "scratch"))
    assert_same_rows(rows(store, "test", "block2"), rows(tmp_path / "scratch", "test", "block2"))
    assert extract.verify(second["set_uri"])["bad"] == []


def test_a_sample_grows_a_set_but_never_shrinks_one_whose_source_still_holds_the_images(tmp_path, files, lite0,
                                                                                         models_root):
    from tlfs.pipeline.errors import SampleShrinksSet

    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    run(source, store, models_root, limit=3)
    grown = run(source, store, models_root, limit=6)  # a larger sample holds the smaller one: images are only added
    assert grown["changes"]["removed"] == 0 and grown["changes"]["added"] == 6 and grown["changes"]["reused"] == 6
    run(source, store, models_root)  # the whole set
    with pytest.raises(SampleShrinksSet, match=r"version 3 holds 12 images that --limit 6 leaves out and the source "
                                               r"still holds: a sample would remove them .* with --full"):
        run(source, store, models_root, limit=6)  # a sample of the whole set would remove its other 12 images
    assert features.describe("inc", "efficientnet_lite0", str(store))["rows"] == 24  # nothing committed
    sample = run(source, store, models_root, limit=6, incremental=False)  # asked for: the set becomes the sample
    assert sample["rows"] == 12 and sample["version"] == 4
    emptied = run(change(source, remove=[k for k in files if k.startswith("train/red/")]), store, models_root, limit=6)
    assert emptied["changes"]["removed"] == 2  # gone from the source: removed, as without a limit


def test_a_run_over_an_unchanged_source_adds_no_version_extracts_nothing_and_opens_no_session(tmp_path, files, lite0,
                                                                                                 models_root):
    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    first = run(source, store, models_root)
    assert first["session_open_seconds"] > 0  # the time its session took to open its graph, in the summary
    assert first["session_open_parts"]["session"] > 0  # and its parts: here onnxruntime's session alone
    assert 0 < first["session_busy"] <= 1  # the share of the extraction's time the session had a batch
    again = run(source, store, models_root)
    assert again["unchanged"] and again["version"] == 1 and again["images_extracted"] == 0
    assert again["session_open_seconds"] == 0 and again["session_open_parts"] == {}
    assert not again["session_busy"]  # no session, no batch
    assert len(features.history("inc", "efficientnet_lite0", str(store))) == 1


def test_a_rejected_image_is_tried_again_only_once_its_file_changed(tmp_path, files, lite0, models_root):
    files["train/red/broken.png"] = b"\x89PNG\r\n\x1a\n truncated"
    store, source = tmp_path / "store", write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    second = run(change(source, {"train/red/extra.png": png_bytes((220, 0, 0))}), store, models_root)
    assert second["images_extracted"] == 1 and second["rejected"] == 1  # the broken file was not read again
    third = run(change(source, {"train/red/broken.png": png_bytes((230, 5, 5))}), store, models_root)
    assert third["images_extracted"] == 1 and third["rejected"] == 0 and "train/red/broken.png" in rows(store)
    counts = third["counts"]["train"]
    assert counts["read"] == counts["written"] + counts["rejected"] == 14


def test_another_layer_set_or_a_full_run_extracts_every_image(tmp_path, files, lite0, models_root):
    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    run(source, store, models_root)
    other = run_extract("inc", [str(source)], "efficientnet_lite0", str(store), models_root, layers=["head"],
                        show_progress=False, log=lambda *_: None, shard_size=4, batch_size=4)
    assert other["images_extracted"] == 24 and other["changes"]["base_version"] is None and other["version"] == 2


def test_a_version_whose_images_were_decoded_by_another_rule_is_not_built_on(tmp_path, files, lite0, models_root,
                                                                             monkeypatch):
    """Decoding is part of what a feature means (a photo turned upright by its EXIF
    orientation or not): a set never holds images decoded by two rules, so a run re-extracts
    every image of a version decoded otherwise, in a plan of its own."""
    import tlfs.pipeline.image_decode as image_decode

    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    older = "Pillow to RGB (alpha over white, 16-bit scaled); ..."  # the rule before EXIF orientation
    monkeypatch.setattr(image_decode, "DECODE", older)
    first = run(source, store, models_root)
    monkeypatch.undo()
    said = []
    second = run_extract("inc", [str(source)], "efficientnet_lite0", str(store), models_root, layers=LAYERS,
                         show_progress=False, log=said.append, shard_size=4, batch_size=4)
    assert second["images_extracted"] == 24 and second["changes"]["base_version"] is None
    assert second["version"] == 2 and second["plan_id"] != first["plan_id"]
    assert any("cannot be reused (its images were decoded by another rule" in line for line in said), said
    third = run(source, store, models_root)  # decoded by today's rule: built on
    assert third["unchanged"] and third["images_extracted"] == 0


def test_a_version_decoded_by_a_rule_this_one_only_extends_with_a_format_is_built_on(tmp_path, files, lite0,
                                                                                    models_root, monkeypatch):
    """A rule that adds a format earlier versions refused at indexing (DICOM) leaves every
    image those versions hold decoded as before: their sets are built on, not re-extracted."""
    import tlfs.pipeline.image_decode as image_decode

    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    monkeypatch.setattr(image_decode, "DECODE", image_decode.PILLOW_DECODE)  # the rule before DICOM was read
    first = run(source, store, models_root)
    monkeypatch.undo()
    assert features.describe("inc", "efficientnet_lite0", str(store))["lineage"]["preprocessing"]["decode"] == \
        image_decode.PILLOW_DECODE != image_decode.DECODE
    second = run(source, store, models_root)
    assert second["unchanged"] and second["images_extracted"] == 0 and second["plan_id"] == first["plan_id"]


def test_older_versions_stay_readable_by_number_and_time_until_vacuumed(tmp_path, files, lite0, models_root):
    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    first = run(source, store, models_root)
    v1 = rows(store)
    v1_time = features.describe("inc", "efficientnet_lite0", str(store))["committed_at"]
    run(change(source, {f"train/green/n{i}.png": png_bytes((0, 200 + i, 0)) for i in range(2)}, ["train/red/000.png"]),
        store, models_root)
    third = run(change(source, {"train/blue/001.png": png_bytes((0, 0, 90))}), store, models_root)
    assert third["version"] == 3

    old = rows(store, version=1)
    assert sorted(old) == sorted(v1) and all(old[i].tobytes() == v1[i].tobytes() for i in v1)
    assert sorted(rows(store, as_of=v1_time)) == sorted(v1)
    assert features.open_set("inc", "efficientnet_lite0", str(store), version=2).version == 2
    history = features.history("inc", "efficientnet_lite0", str(store))
    assert list(history["version"]) == [1, 2, 3] and list(history["added"]) == [24, 2, 0]
    assert [None if v != v else int(v) for v in history["base_version"]] == [None, 1, 2]  # each built on the one before
    assert list(history["changed"])[2] == 1 and list(history["removed"])[1] == 1

    # a plain reader of a layer folder gets the newest version's rows and nothing else
    plain = pd.read_parquet(f"{first['set_uri']}/layer=head")
    newest = features.open_set("inc", "efficientnet_lite0", str(store))
    assert sorted(plain["image_id"]) == sorted(set(rows(store)) | set(rows(store, "test")))
    assert newest.version == 3

    from tlfs.features.versions import Retention

    report = extract.vacuum(first["set_uri"], Retention(versions=1, days=None))
    assert report["versions_vacuumed"] == [1, 2] and report["files_removed"] > 0
    with pytest.raises(features.NotCommitted, match="vacuumed"):
        rows(store, version=1)
    assert extract.verify(first["set_uri"])["bad"] == []
    assert sorted(rows(store)) == sorted(plain.loc[plain["split"] == "train", "image_id"])


def test_a_vacuum_keeps_the_version_a_live_run_builds_on(tmp_path, files, lite0, models_root):
    from tlfs.features.leases import LeaseTerms
    from tlfs.pipeline.plan import ExtractionRequest

    store, source = tmp_path / "store", write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    change(source, {"train/red/late.png": png_bytes((210, 30, 30))})
    request = ExtractionRequest("inc", (str(source),), "efficientnet_lite0", str(store), models_root, layers=tuple(LAYERS),
                                shard_size=4)
    live = extract.plan_task(request, lease=LeaseTerms(ttl=600, linger=600), log=lambda *_: None)  # queued, not run yet
    assert live.base == {"version": 1, "plan_id": features.open_set("inc", "efficientnet_lite0", str(store)).plan_id}
    # meanwhile another run commits version 2 without one of version 1's images, and a vacuum keeps only 1 version
    run(change(source, remove=["train/green/002.png"]), store, models_root)
    report = extract.vacuum(live.set_uri, Retention(versions=1, days=None))
    assert 1 in report["versions_kept"] and report["files_removed"] == 0  # the live run still needs version 1's files
    results = extract.extract_shards_task(live.set_uri, live.plan_id, [s.number for s in live.shards])
    committed = extract.commit_task(live.set_uri, live.plan_id, results, log=lambda *_: None)
    assert committed.version == 3 and extract.verify(live.set_uri)["bad"] == []
    assert "train/green/002.png" in rows(store) and "train/red/late.png" in rows(store)  # the live run's view of the source


def test_a_run_in_another_codec_writes_its_new_and_derived_files_in_it_and_keeps_the_reused_ones(
        tmp_path, files, lite0, models_root):
    """A set may mix codecs: readers take each file as it is."""
    from pathlib import Path

    import pyarrow.parquet as pq

    def codecs_of(summary) -> dict[str, set]:
        """The head layer's files by the compression of their features."""
        found: dict[str, set] = {}
        for path in Path(summary["set_uri"]).glob("layer=head/**/*.parquet"):
            found.setdefault(pq.ParquetFile(path).metadata.row_group(0).column(3).compression, set()).add(path.name)
        return found

    store = tmp_path / "store"
    source = write_tree(tmp_path / "src", files)
    run(source, store, models_root)
    before = rows(store)
    changed = change(source, {f"train/red/new{i}.png": png_bytes((200 + i, 10, 10)) for i in range(3)},
                     remove=("test/red/000.png",))
    second = run(changed, store, models_root, codec="zstd")
    assert second["shards_reused"] > 0 and second["shards_derived"] > 0
    found = codecs_of(second)
    assert set(found) == {"LZ4", "ZSTD"}
    assert len(found["ZSTD"]) == second["shards"] - second["shards_reused"]  # the new shards and the derived one
    after = rows(store)
    assert all(after[i].tobytes() == before[i].tobytes() for i in before)
    assert len(rows(store, "test")) == 11


def test_an_int8_set_records_its_graph_and_is_extracted_again_by_another_int8_graph_or_in_fp32(
        tmp_path, files, int8_models):
    """int8 features hang on the quantized file, which each model store builds for itself:
    a set is built on only by the graph that computed it."""
    import shutil

    from tlfs.models.artifact import read_card

    source, store = write_tree(tmp_path / "src", files), tmp_path / "store"
    first = run(source, store, int8_models, precision="int8")
    lineage = features.describe("inc", "efficientnet_lite0", str(store))["lineage"]
    card = read_card(f"{int8_models}/{first['backbone_version']}")
    assert lineage["runtime"]["precision"] == "int8"
    assert lineage["onnx_file_sha256"] == card["variants"]["int8"]["sha256"] != card["onnx_sha256"]
    assert run(source, store, int8_models, precision="int8")["unchanged"]

    # another store's int8 graph: the same backbone version, other bytes
    other = tmp_path / "other-models"
    shutil.copytree(f"{int8_models}/{first['backbone_version']}", other / first["backbone_version"])
    int8_graph_built_again(other / first["backbone_version"], alongside=False)
    said = []
    again = run_extract("inc", [str(source)], "efficientnet_lite0", str(store), str(other), layers=LAYERS,
                        show_progress=False, log=said.append, shard_size=4, batch_size=4, precision="int8")
    assert again["images_extracted"] == 24 and again["changes"]["base_version"] is None
    assert again["plan_id"] != first["plan_id"]  # not the first plan's shard records, done by the other graph
    assert any("cannot be reused (its int8 graph was another file" in line for line in said), said

    said = []
    in_fp32 = run_extract("inc", [str(source)], "efficientnet_lite0", str(store), int8_models, layers=LAYERS,
                          show_progress=False, log=said.append, shard_size=4, batch_size=4)
    assert in_fp32["images_extracted"] == 24
    assert any("it ran on cpu (int8), this run on cpu (fp32)" in line for line in said), said
    int8_rows, fp32_rows = rows(store, version=first["version"]), rows(store)
    cosines = [float(np.dot(a.astype(np.float32), b.astype(np.float32)) /
                     np.linalg.norm(a.astype(np.float32)) / np.linalg.norm(b.astype(np.float32)))
               for a, b in ((int8_rows[i], fp32_rows[i]) for i in fp32_rows)]
    assert 0.85 < min(cosines) and max(cosines) < 0.9999, cosines  # close to fp32's, not fp32's
