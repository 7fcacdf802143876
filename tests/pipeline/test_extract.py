import contextlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlfs import features
from tlfs.pipeline import extract
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.plan import ExtractionRequest
from tests.conftest import folder_images, int8_graph_built_again, write_tree
from tests.extraction import run_extract


def run(tmp_path, source, lite0_models, **kw):
    return run_extract("colors", [str(source)], "efficientnet_lite0", str(tmp_path / "store"), lite0_models,
                       show_progress=False, log=lambda *_: None, **{"shard_size": 5, "batch_size": 4, **kw})


def test_extraction_commits_every_layer_and_split_and_loads_in_pandas(tmp_path, folder_dataset, lite0, models_root):
    summary = run(tmp_path, folder_dataset, models_root)
    assert summary["rows"] == 24 and summary["rejected"] == 0
    assert summary["counts"] == {"test": {"read": 12, "written": 12, "rejected": 0}, "train": {"read": 12, "written": 12, "rejected": 0}}
    store = str(tmp_path / "store")
    frame = features.load("colors", "efficientnet_lite0", "head", "train", store)
    assert list(frame.columns) == ["image_id", "label", "label_name", "split", "features"]
    assert len(frame) == 12 and frame["features"].iloc[0].shape == (1280,)
    assert (frame["label_name"].map(["blue", "green", "red"].index) == frame["label"]).all()
    X, y, ids = features.load_matrix("colors", "efficientnet_lite0", "block2", "test", store)
    assert X.shape == (12, 24) and X.dtype == np.float32 and len(set(ids)) == 12
    plain = pd.read_parquet(f"{summary['set_uri']}/layer=block7")  # no tlfs code involved
    assert len(plain) == 24 and set(plain["split"].astype(str)) == {"train", "test"}


def test_features_do_not_depend_on_batch_or_shard_size(tmp_path, folder_dataset, lite0, models_root):
    a = run(tmp_path / "a", folder_dataset, models_root, shard_size=100, batch_size=24)
    b = run(tmp_path / "b", folder_dataset, models_root, shard_size=3, batch_size=2)
    Xa, _, ia = features.load_matrix("colors", a["backbone_version"], "head", "train", str(tmp_path / "a" / "store"))
    Xb, _, ib = features.load_matrix("colors", b["backbone_version"], "head", "train", str(tmp_path / "b" / "store"))
    order_a, order_b = np.argsort(ia), np.argsort(ib)
    assert list(ia[order_a]) == list(ib[order_b])
    np.testing.assert_allclose(Xa[order_a], Xb[order_b], atol=2e-3, rtol=1e-2)


def test_a_shards_short_last_batch_is_filled_with_the_next_shards_images(tmp_path, folder_dataset, lite0, models_root,
                                                                        monkeypatch):
    """On CUDA a short batch costs a whole one (the fixed-shape graph pads it), so batches run
    on through the shards' ends: 24 images in shards of 5, 5 and 2 a split make six batches of
    4, not ten; every image keeps its own features, in its shard's order."""
    from tlfs.models.session import TapSession

    sizes = []
    run_batch = TapSession.run
    monkeypatch.setattr(TapSession, "run", lambda self, images: sizes.append(len(images)) or run_batch(self, images))
    across = run(tmp_path / "a", folder_dataset, models_root)  # shards of 5, batches of 4
    assert across["shards"] == 6 and sizes == [4] * 6
    whole = run(tmp_path / "b", folder_dataset, models_root, shard_size=12)  # a shard a split: 3 batches each
    assert sizes[6:] == [4] * 6
    del sizes[:]
    tiny = run(tmp_path / "c", folder_dataset, models_root, shard_size=2, batch_size=8)  # shards smaller than a batch
    assert tiny["shards"] == 12 and sizes == [8] * 3  # share batches: twelve shards, three full batches
    for split in ("train", "test"):
        Xa, _, ia = features.load_matrix("colors", across["backbone_version"], "head", split, str(tmp_path / "a" / "store"))
        Xb, _, ib = features.load_matrix("colors", whole["backbone_version"], "head", split, str(tmp_path / "b" / "store"))
        assert list(ia) == list(ib)
        np.testing.assert_array_equal(Xa, Xb)  # the same images in the same batches: the same bits


def test_the_summary_times_the_writers_work_not_their_wait_for_batches(tmp_path, folder_dataset, lite0, models_root,
                                                                      monkeypatch):
    """A slow device keeps the writers waiting for each shard's batches; the summary's writing
    seconds are the threads' work on the files, so that ``writers_busy`` says whether the
    writers bound the run (here, far from it)."""
    from tlfs.models.session import TapSession

    run_batch, device = TapSession.run, threading.Lock()

    def slow(self, images):
        with device:  # one batch at a time, however many threads call
            time.sleep(0.25)
        return run_batch(self, images)

    monkeypatch.setattr(TapSession, "run", slow)
    summary = run(tmp_path, folder_dataset, models_root)  # six batches of 4: 1.5 s of the device's
    assert summary["extract_seconds"] >= 1.5
    assert 0 < summary["parquet_write_seconds"] < 0.5
    assert 0 < summary["writers_busy"] < 0.3
    assert summary["parquet_write_mb_per_second"] > summary["parquet_mb_per_second"] > 0


def test_two_sets_of_bound_buffers_on_two_inference_threads_give_the_same_features(tmp_path, folder_dataset, lite0,
                                                                                   models_root):
    """CUDA's default runner (fixed-shape graphs, two buffer sets, two inference threads),
    here on the CPU: every image's features are its own, in its shard's order."""
    from tlfs.models.runtime import resolve_runtime

    plain = run(tmp_path / "a", folder_dataset, models_root)
    bound = run(tmp_path / "b", folder_dataset, models_root, batch_size=None,
                runtime=resolve_runtime("cpu", batch_size=4, fixed_shape=True, bound_buffers=2))
    assert bound["rows"] == plain["rows"] == 24
    for split in ("train", "test"):
        Xa, _, ia = features.load_matrix("colors", plain["backbone_version"], "head", split, str(tmp_path / "a" / "store"))
        Xb, _, ib = features.load_matrix("colors", bound["backbone_version"], "head", split, str(tmp_path / "b" / "store"))
        assert list(ia) == list(ib)
        np.testing.assert_allclose(Xb, Xa, atol=2e-3, rtol=1e-2)


def test_decode_worker_processes_give_the_same_set_as_decoding_on_the_reading_thread(tmp_path, lite0, models_root):
    files = folder_images(per_class=30)  # several chunks of work per process
    files["train/red/broken.png"] = b"\x89PNG\r\n\x1a\n truncated"
    source = write_tree(tmp_path / "d", files)
    one = run(tmp_path / "one", source, models_root, decode_workers=1, shard_size=50)
    three = run(tmp_path / "three", source, models_root, decode_workers=3, shard_size=50)
    assert (one["decode_workers"], three["decode_workers"]) == (1, 3)
    manifests = [features.describe("colors", "efficientnet_lite0", str(tmp_path / name / "store")) for name in ("one", "three")]
    assert manifests[0]["plan_id"] == manifests[1]["plan_id"] and manifests[0]["rejects"] == manifests[1]["rejects"]
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]  # byte for byte


def test_the_writer_pools_threads_change_no_byte_of_the_set(tmp_path, folder_dataset, lite0, models_root):
    """One writer (files, then the record, in shard order) and a pool (files of several layers
    and shards at once, records on a thread of their own) write the same files; on the CPU the
    default is a quarter of the cores (pipeline/shard_writer.writer_threads)."""
    from tlfs.models.runtime import available_cores
    from tlfs.pipeline.shard_writer import writer_threads

    runs = {n: run(tmp_path / str(n), folder_dataset, models_root, writers=n, shard_size=3) for n in (1, 3)}
    default = run(tmp_path / "default", folder_dataset, models_root)
    assert (runs[1]["writers"], runs[3]["writers"]) == (1, 3)
    assert default["writers"] == writer_threads(available_cores(), "cpu")
    manifests = [features.describe("colors", "efficientnet_lite0", str(tmp_path / str(n) / "store")) for n in (1, 3)]
    assert len(manifests[0]["shards"]) == 8 * 7  # 8 shards of 3 images, 7 layers each
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]


def test_a_file_that_cannot_be_written_fails_the_run_without_trying_the_files_queued_behind_it(
        tmp_path, folder_dataset, lite0, models_root, monkeypatch):
    """On a failing store each write goes through its retries first: the files queued
    behind a failed one are dropped, and the run fails with that file's error."""
    from tlfs.pipeline import shard_writer

    tried, put = [], shard_writer.put_shard

    def failing_first(uri, encoded):
        tried.append(uri)
        if len(tried) == 1:
            raise OSError(f"disk full writing {uri}")
        return put(uri, encoded)

    monkeypatch.setattr(shard_writer, "put_shard", failing_first)
    with pytest.raises(OSError, match=r"disk full writing .*part-"):
        run(tmp_path, folder_dataset, models_root, writers=1, shard_size=3)
    assert len(tried) == 1, tried

    # the same when the first file fails before the rest of its shard is queued (on a busy
    # machine the writer thread can finish a file before the runner's thread runs again)
    tried.clear()
    layers_in_order = shard_writer.widest_first

    def slow_to_queue(views, layer_dims):
        for n, file in enumerate(layers_in_order(views, layer_dims)):
            yield file
            if n == 0:
                time.sleep(0.3)

    monkeypatch.setattr(shard_writer, "widest_first", slow_to_queue)
    with pytest.raises(OSError, match=r"disk full writing .*part-"):
        run(tmp_path / "again", folder_dataset, models_root, writers=1, shard_size=3)
    assert len(tried) == 1, tried


def test_a_sets_codec_changes_how_its_files_are_compressed_and_not_one_bit_of_its_features(
        tmp_path, folder_dataset, lite0, models_root):
    import pyarrow.parquet as pq

    runs = {codec: run(tmp_path / codec, folder_dataset, models_root, codec=codec) for codec in ("lz4", "zstd", "none")}
    for codec, summary in runs.items():
        for path in Path(summary["set_uri"]).glob("layer=*/**/*.parquet"):
            meta = pq.ParquetFile(path).metadata.row_group(0)
            assert {meta.column(i).compression for i in range(meta.num_columns)} == \
                {{"lz4": "LZ4", "zstd": "ZSTD", "none": "UNCOMPRESSED"}[codec]}
    assert runs["none"]["parquet_bytes"] > runs["lz4"]["parquet_bytes"]
    for layer in ("block2", "head"):
        loaded = {codec: features.load_matrix("colors", "efficientnet_lite0", layer, "train", str(tmp_path / codec / "store"))
                  for codec in runs}
        X, _, ids = loaded["lz4"]
        for other, other_ids in ((loaded[c][0], loaded[c][2]) for c in ("zstd", "none")):
            assert list(other_ids) == list(ids) and other.tobytes() == X.tobytes()


def test_corrupt_images_are_rejected_and_counts_reconcile(tmp_path, lite0, models_root):
    files = folder_images()
    files["train/red/broken.png"] = b"\x89PNG\r\n\x1a\n truncated"
    files["train/red/empty.jpg"] = b""
    files["test/blue/odd.jpg"] = b"<html>not an image</html>"
    summary = run(tmp_path, write_tree(tmp_path / "d", files), models_root)
    assert summary["counts"]["train"] == {"read": 14, "written": 12, "rejected": 2}
    assert summary["counts"]["test"] == {"read": 13, "written": 12, "rejected": 1}
    manifest = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    reasons = {r["image_id"]: r["reason"] for r in manifest["rejects"]}
    assert reasons["train/red/empty.jpg"] == "empty file (0 bytes)"
    assert "corrupt" in reasons["train/red/broken.png"] and "not a recognised" in reasons["test/blue/odd.jpg"]


def test_mixed_image_sizes_are_batched_by_size(tmp_path, lite0, models_root):
    from tests.conftest import png_bytes

    files = folder_images(per_class=2)
    files["train/red/big.png"] = png_bytes((200, 10, 10), size=(300, 260))
    files["train/red/tall.png"] = png_bytes((200, 10, 10), size=(20, 50))
    summary = run(tmp_path, write_tree(tmp_path / "d", files), models_root)
    assert summary["counts"]["train"]["written"] == 8
    # a part-filled batch of a rarer size holds its shard back only until the next shard's images are in
    many = folder_images(per_class=4)
    for n in range(6):
        many[f"train/red/odd{n}.png"] = png_bytes((200, 10, 10), size=(40 + 8 * n, 36))
    summary = run(tmp_path / "many", write_tree(tmp_path / "m", many), models_root, shard_size=4)
    assert summary["counts"]["train"] == {"read": 18, "written": 18, "rejected": 0}
    frame = features.load("colors", "efficientnet_lite0", "head", "train", str(tmp_path / "many" / "store"))
    assert sorted(frame["image_id"]) == sorted(k for k in many if k.startswith("train/"))


def test_rerun_skips_completed_shards_and_gives_the_same_set(tmp_path, folder_dataset, lite0, models_root):
    first = run(tmp_path, folder_dataset, models_root)
    manifest = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    second = run(tmp_path, folder_dataset, models_root)
    assert first["shards_skipped"] == 0 and second["shards_skipped"] == second["shards"] == first["shards"]
    # its timings are its own: the first run's shards cost it no inference and no writing
    assert first["infer_seconds"] > 0 and first["parquet_write_seconds"] > 0 and first["images_per_second"] > 0
    assert second["infer_seconds"] == second["parquet_write_seconds"] == 0 and second["images_per_second"] is None
    again = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_a_run_that_resumes_an_interrupted_one_counts_only_the_images_it_computed(tmp_path, folder_dataset, lite0,
                                                                                 models_root, monkeypatch):
    """A run stopped after three of its six shards (Ctrl-C) leaves their files; the run
    that resumes the plan computes the other three, and its rate is of those alone."""
    from tlfs.pipeline.cli.extract_commands import _extracted

    finish_shards = extract.run_shards

    def stopped_after_three(p, numbers, *args, **kw):
        finish_shards(p, numbers[:3], *args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "run_shards", stopped_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, folder_dataset, models_root)
    monkeypatch.undo()
    resumed = run(tmp_path, folder_dataset, models_root)
    assert resumed["shards"] == 6 and resumed["shards_skipped"] == 3
    assert resumed["images_extracted"] == 24 and resumed["images_computed"] == 12  # shards of 5, 5 and 2 a split
    assert _extracted(resumed).startswith(f"24 images extracted, 12 of them by this run, at {resumed['images_per_second']} ")
    whole = run(tmp_path / "whole", folder_dataset, models_root)
    assert whole["images_extracted"] == whole["images_computed"] == 24
    assert _extracted(whole).startswith(f"24 images extracted at {whole['images_per_second']} images/s, busy: ")
    done_before = {**resumed, "images_computed": 0, "images_per_second": None}  # a plan an earlier run computed whole
    assert _extracted(done_before) == "24 images extracted, all by an earlier run of the plan"


def test_a_given_decoders_earlier_work_is_not_counted_in_the_runs_summary(tmp_path, folder_dataset, lite0, models_root):
    """A decoder handed to runs (a benchmark's, a notebook's) serves each; a run's summary
    gives its own reading and decoding."""
    from tlfs.pipeline.decode_pool import Decoder

    with Decoder(1).start() as decoder:
        decoder.stats.read_seconds, decoder.stats.decode_seconds = 50.0, 100.0  # its work for earlier runs
        summary = run(tmp_path, folder_dataset, models_root, decoder=decoder)
    assert summary["read_seconds"] < 1 and summary["decode_seconds"] < 1  # 24 small images
    assert decoder.stats.read_seconds > 50 and decoder.stats.decode_seconds > 100  # the decoder's own count goes on


def test_a_given_sessions_opening_before_the_run_is_not_counted_in_the_runs_summary(tmp_path, folder_dataset, lite0,
                                                                                     models_root):
    from tlfs.models.runtime import resolve_runtime
    from tlfs.models.session import open_session

    session = open_session(lite0, runtime=resolve_runtime(batch_size=4))  # the CPU's graph opens here
    assert session.opening_seconds > 0
    summary = run(tmp_path, folder_dataset, models_root, session=session)
    assert summary["rows"] == 24 and summary["session_open_seconds"] == 0 and summary["session_open_parts"] == {}


def test_a_new_plan_moves_the_old_files_out_of_the_layer_folders_after_commit(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "d", folder_images(per_class=6))
    run(tmp_path, source, models_root)
    second = run(tmp_path, source, models_root, limit=3, incremental=False)  # the set made a sample of itself
    manifest = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    assert manifest["rows"] == 6 and manifest["version"] == 2
    set_root = Path(second["set_uri"])
    visible = {str(p.relative_to(set_root)) for p in set_root.glob("layer=*/split=*/part-*.parquet")}
    assert visible == {s["path"] for s in manifest["shards"]}  # exactly the newest version's files
    retired = list((set_root / "_retired").rglob("part-*.parquet"))  # version 1's, until vacuumed
    assert retired and not list((set_root / "_staging").rglob("part-*.parquet"))


def test_commit_refuses_a_missing_shard(tmp_path, folder_dataset, lite0, models_root):
    p = extract.plan_task(ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", str(tmp_path / "store"),
                                            models_root, shard_size=5), log=lambda *_: None)
    extract.extract_shard(p, 0)
    with pytest.raises(PipelineError, match="shard 1 is not extracted"):
        extract.commit(p, log=lambda *_: None)
    with pytest.raises(features.NotCommitted):
        features.load("colors", "efficientnet_lite0", "head", "train", str(tmp_path / "store"))


def test_the_commit_uses_the_shard_records_it_is_handed_and_checks_their_files(tmp_path, folder_dataset, lite0, models_root):
    import shutil

    from tlfs.features import layout

    store = str(tmp_path / "store")
    p = extract.plan_task(ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", store, models_root,
                                            shard_size=5), log=lambda *_: None)
    results = [extract.extract_shard_task(p.set_uri, p.plan_id, n) for n in range(len(p.shards))]
    # the records in staging are not read back: the handed ones are enough
    shutil.rmtree(f"{layout.staging_uri(p.set_uri, p.plan_id)}/shards")
    extract.commit_task(p.set_uri, p.plan_id, results, log=lambda *_: None)
    assert features.describe("colors", "efficientnet_lite0", store)["rows"] == sum(r["written"] for r in results)
    # a handed record whose new file is gone is refused, naming the shard (a file reused
    # from the base was checked by the base's commit: tlfs verify reads every byte)
    q = extract.plan_task(ExtractionRequest("colors", (str(folder_dataset),), "efficientnet_lite0", store, models_root,
                                            shard_size=4, incremental=False), log=lambda *_: None)
    handed = [extract.extract_shard_task(q.set_uri, q.plan_id, n) for n in range(len(q.shards))]
    from tlfs.features.versions import locate

    staged = locate(q.set_uri, handed[1]["files"]["head"]["path"])
    assert f"/{layout.STAGING}/" in staged  # extracted anew
    Path(staged).unlink()
    with pytest.raises(PipelineError, match="shard 1 is not extracted"):
        extract.commit_task(q.set_uri, q.plan_id, handed, log=lambda *_: None)


def test_unknown_layer_is_refused_before_any_work(tmp_path, folder_dataset, lite0, models_root):
    from tlfs.models.errors import ModelError

    with pytest.raises(ModelError, match="unknown layer"):
        run(tmp_path, folder_dataset, models_root, layers=["block99"])


def test_manifest_records_lineage(tmp_path, folder_dataset, lite0, models_root):
    run(tmp_path, folder_dataset, models_root, layers=["block2", "head"], splits=["train"])
    m = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    assert m["layers"] == {"block2": 24, "head": 1280} and m["splits"] == ["train"]
    assert m["lineage"]["onnx_sha256"] == lite0.card["onnx_sha256"]
    assert m["lineage"]["sources"][0]["checksum"]["listing_sha256"]
    assert m["lineage"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert "git_commit" in m["lineage"]["code"]
    json.dumps(m)


def test_verify_finds_exactly_the_damaged_shards_and_repairs_them(tmp_path, folder_dataset, lite0, models_root):
    summary = run(tmp_path, folder_dataset, models_root, layers=["block2", "head"])
    m = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    assert extract.verify(summary["set_uri"])["bad"] == []
    files = {s["path"]: s for s in m["shards"]}
    flipped, truncated = sorted(files)[0], sorted(files)[3]
    path = tmp_path / "store" / "colors" / m["backbone_version"]
    data = bytearray((path / flipped).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / flipped).write_bytes(bytes(data))
    (path / truncated).write_bytes((path / truncated).read_bytes()[:-10])
    report = extract.verify(summary["set_uri"])
    assert {b["path"]: b["reason"] for b in report["bad"]} == {flipped: "sha256 mismatch", truncated: f"size {files[truncated]['bytes'] - 10} != {files[truncated]['bytes']}"}
    repaired = extract.verify(summary["set_uri"], repair=True, log=lambda *_: None)
    assert repaired["repaired"] == sorted({files[flipped]["shard"], files[truncated]["shard"]})
    assert repaired["bad_after_repair"] == 0 and extract.verify(summary["set_uri"])["bad"] == []
    X, _, _ = features.load_matrix("colors", "efficientnet_lite0", "head", "train", str(tmp_path / "store"))
    assert X.shape == (12, 1280)


def test_shard_workers_do_not_import_torch():
    """extract_shard needs only onnxruntime: each Airflow shard task starts faster and lighter."""
    import subprocess
    import sys

    code = "import sys, pipeline.extract, pipeline.tasks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_device_and_precision_are_part_of_the_plan_and_the_lineage_so_a_set_never_mixes_them(tmp_path, folder_dataset, lite0, models_root):
    store = str(tmp_path / "store")
    fp32 = run(tmp_path, folder_dataset, models_root)
    first = features.describe("colors", "efficientnet_lite0", store)
    fp16 = run(tmp_path, folder_dataset, models_root, precision="fp16")
    second = features.describe("colors", "efficientnet_lite0", store)
    assert fp32["set_uri"] == fp16["set_uri"] and first["plan_id"] != second["plan_id"]
    assert first["lineage"]["runtime"]["precision"] == "fp32" and second["lineage"]["runtime"]["precision"] == "fp16"
    assert second["lineage"]["runtime"]["provider"] == "CPUExecutionProvider"
    assert second["lineage"]["onnx_file_sha256"] == lite0.card["variants"]["fp16"]["sha256"] != first["lineage"]["onnx_file_sha256"]
    prefix = f"part-{second['plan_id'][:8]}-"
    assert all(s["path"].rsplit("/", 1)[1].startswith(prefix) for s in second["shards"])
    visible = {p.name for p in Path(fp16["set_uri"]).glob("layer=*/split=*/part-*.parquet")}
    assert visible and all(name.startswith(prefix) for name in visible), "fp32 shards were left beside the fp16 set"
    assert fp16["images_extracted"] == 24  # nothing of the fp32 version reused


def test_repair_on_another_device_than_the_sets_is_refused(tmp_path, folder_dataset, lite0, models_root):
    summary = run(tmp_path, folder_dataset, models_root)
    manifest = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    damaged = tmp_path / "store" / "colors" / summary["backbone_version"] / manifest["shards"][0]["path"]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(PipelineError, match="would mix devices in one set"):
        extract.verify(summary["set_uri"], repair=True, device="cuda", log=lambda *_: None)
    assert extract.verify(summary["set_uri"], repair=True, log=lambda *_: None)["bad_after_repair"] == 0


def test_repair_with_another_graph_than_the_sets_is_refused(tmp_path, folder_dataset, int8_models):
    """An int8 set's damaged shard is computed again by the int8 graph its other shards came
    from, or not at all: a model store whose int8 graph was built again holds another one,
    which the plan's card (the one the set ran with) refuses."""
    import shutil

    from tlfs.models.errors import ModelError

    models = tmp_path / "models"
    shutil.copytree(int8_models, models)
    summary = run(tmp_path, folder_dataset, str(models), precision="int8")
    manifest = features.describe("colors", "efficientnet_lite0", str(tmp_path / "store"))
    damaged = tmp_path / "store" / "colors" / summary["backbone_version"] / manifest["shards"][0]["path"]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    folder = models / summary["backbone_version"]
    int8_graph_built_again(folder, alongside=False)
    with pytest.raises(ModelError, match="model.int8.* has sha256 .*, its model card says .*: refusing it"):
        extract.verify(summary["set_uri"], repair=True, log=lambda *_: None)  # the plan keeps the card it ran with
    shutil.rmtree(folder)
    shutil.copytree(f"{int8_models}/{summary['backbone_version']}", folder)  # the graph the set came from
    assert extract.verify(summary["set_uri"], repair=True, log=lambda *_: None)["bad_after_repair"] == 0


def test_one_decoding_stream_runs_through_the_shards_to_compute_and_skips_the_done(tmp_path, folder_dataset, lite0, models_root):
    from tlfs.pipeline.decode_pool import Decoder
    from tlfs.pipeline.runner import Workers
    from tlfs.pipeline.staging import forget_record

    summary = run(tmp_path, folder_dataset, models_root, decode_workers=1)
    p = extract.load_plan(summary["set_uri"], features.open_set("colors", "efficientnet_lite0", store=str(tmp_path / "store")).plan_id)
    before = extract.run_shards(p, [s.number for s in p.shards])
    for number in (1, 3):  # forget two shards: only their images are read and decoded again
        forget_record(p, number)
    with Decoder(1) as decoder:
        after = extract.run_shards(p, [s.number for s in p.shards], Workers(decoder=decoder))
    assert decoder.stats.images == p.shards[1].images + p.shards[3].images
    assert [r.shard for r in after if not r.skipped] == [1, 3]
    assert [r.files for r in after] == [r.files for r in before]  # the same files, byte for byte


def test_a_grid_variant_stores_each_taps_grid_beside_its_average_in_a_set_of_its_own(tmp_path, folder_dataset, lite0, models_root):
    store = str(tmp_path / "store")
    plain = run(tmp_path, folder_dataset, models_root, layers=["head"])
    gridded = run_extract("colors", [str(folder_dataset)], "efficientnet_lite0_2x2", store, models_root, layers=["head", "head_2x2"],
                          show_progress=False, log=lambda *_: None, shard_size=5, batch_size=4)
    assert gridded["set_uri"] != plain["set_uri"] and gridded["rows"] == 24
    quadrants, _, ids = features.load_matrix("colors", "efficientnet_lite0_2x2", "head_2x2", "train", store)
    average, _, same_ids = features.load_matrix("colors", "efficientnet_lite0_2x2", "head", "train", store)
    assert quadrants.shape == (12, 4 * 1280) and list(ids) == list(same_ids)
    # a 7x7 map's quadrants overlap in the middle row and column: near, not equal, to the average
    assert np.corrcoef(quadrants.reshape(12, 4, 1280).mean(1).ravel(), average.ravel())[0, 1] > 0.95
    # readers that name the plain backbone still get the plain set
    assert features.open_set("colors", "efficientnet_lite0", store).uri == plain["set_uri"]
    with pytest.raises(Exception, match="head_2x2"):
        features.load("colors", "efficientnet_lite0", "head_2x2", "train", store)


def test_a_commit_leaves_each_file_in_one_place_and_no_folders_in_its_staging(tmp_path, folder_dataset, lite0, models_root):
    summary = run(tmp_path, folder_dataset, models_root)
    set_root = Path(summary["set_uri"])
    assert len(list(set_root.rglob("layer=head"))) == 1  # the layer's folder, not another under _staging
    assert not list((set_root / "_staging").rglob("files"))


def test_a_commit_gathers_its_records_and_keeps_the_single_ones_while_another_run_works_on_the_plan(
        tmp_path, folder_dataset, lite0, models_root):
    """The single records go only when no other run of the plan could be looking for
    them: one that had not seen the gathered file would extract its shards anew."""
    from tlfs.features import layout
    from tlfs.features.leases import LeaseTerms, hold
    from tlfs.models.runtime import resolve_runtime
    from tlfs.pipeline.plan import ExtractionRequest

    for others, kept in ((0, 0), (1, 6)):
        store = str(tmp_path / f"store{others}")
        request = ExtractionRequest("colors", [str(folder_dataset)], "efficientnet_lite0", store, models_root,
                                          layers=["head"], shard_size=5, runtime=resolve_runtime(batch_size=4))
        p = extract.plan(request, log=lambda *_: None)
        with hold(p.set_uri, p.plan_id, LeaseTerms(), plan_must_exist=False) as held:
            extract.save_plan(p, held)
            records = extract.run_shards(p, [s.number for s in p.shards], check=held.check)
            with contextlib.ExitStack() as stack:
                for _ in range(others):  # another run of the same plan, at work
                    stack.enter_context(hold(p.set_uri, p.plan_id, LeaseTerms()))
                extract.commit(p, records, log=lambda *_: None)
        staging = Path(layout.staging_uri(p.set_uri, p.plan_id))
        assert len((staging / "records.jsonl").read_text().splitlines()) == len(p.shards) == 6
        assert len(list(staging.glob("shards/*.json"))) == kept
