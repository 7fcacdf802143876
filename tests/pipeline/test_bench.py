import json

import pytest

from tlfs.pipeline.cli import main


def test_bench_measures_every_competitor_on_cpu(capsys, lite0, models_root):
    code = main(["bench", "--backbone", "efficientnet_lite0", "--device", "cpu", "--batch-size", "8", "--images", "16",
                 "--models", models_root])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["torch_fp32"] > 0 and result["ort_fp32"] > 0 and result["pipeline"] > 0
    assert result["ort_fp16"] is None and result["precision"] == "fp32"  # fp16 is a CUDA row
    assert result["torch_fp16"] is None and result["pipeline_vs_torch_fp16"] is None  # no fp16 on CPU
    # every row ran the images asked for; the pipeline row turned each into stored features
    assert result["images"] == 16 and result["pipeline_rows"] == 16
    assert {"pipeline_vs_ort", "pipeline_vs_torch_fp32", "ort_fp32_after_pipeline"} <= set(result)
    assert "(d) tlfs extract" in out
    assert {"pipeline_thread_cpu_us_per_image", "pipeline_busiest_thread", "pipeline_busiest_thread_busy"} <= set(result)
    # cores idle while the run had work: time it lost waiting on itself (Linux says, /proc/stat)
    assert 0 <= result["pipeline_cores_idle"] <= 1 and "the machine's cores idle" in out
    # the ratio to onnxruntime alone, split: the share of the time the session had a batch, times its own rate meanwhile
    assert 0 < result["pipeline_session_busy"] <= 1
    assert result["pipeline_writers"] >= 1 and 0 < result["pipeline_writers_busy"] < 1  # their work, not their waits
    assert "threads wrote" in out
    product = result["pipeline_session_busy"] * result["pipeline_session_vs_ort"]
    assert abs(product - result["pipeline_vs_ort"]) <= 0.002 * result["pipeline_session_vs_ort"]  # rounding only
    assert "the session had a batch" in out
    # its idle time at the run's two ends is part of the time it had no batch
    first, last = result["pipeline_session_first_batch_seconds"], result["pipeline_session_after_last_batch_seconds"]
    extract_seconds = result["pipeline_extract_seconds"]
    assert 0 <= first and 0 <= last and first + last <= (1 - result["pipeline_session_busy"]) * extract_seconds + 0.02
    assert "before the session's first batch" in out


def test_rounds_repeat_the_pipeline_beside_onnxruntime_alone_and_report_the_round_of_the_median_ratio(capsys, lite0,
                                                                                                      models_root):
    code = main(["bench", "--backbone", "efficientnet_lite0", "--device", "cpu", "--batch-size", "8", "--images", "16",
                 "--rounds", "3", "--models", models_root])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    rounds = result["pipeline_vs_ort_rounds"]
    assert len(rounds) == 3
    assert result["pipeline_vs_ort"] == sorted(rounds)[1]  # the median round's own figures, not a mix of rounds
    ort = (result["ort_fp32"] + result["ort_fp32_after_pipeline"]) / 2
    # the median round's own figures, rounding aside
    assert abs(result["pipeline"] / ort - result["pipeline_vs_ort"]) <= 0.002 * result["pipeline_vs_ort"]
    assert result["pipeline_rows"] == 16  # each round extracted every image into a store of its own
    assert "every round's" in out


def test_onnxruntime_alone_is_fed_from_as_many_threads_at_once_as_the_pipeline_feeds_it():
    """The pipeline keeps a batch per thread its session can use in flight; the row it is
    compared with feeds the session the same way, or the pipeline would gain on a straw man."""
    import threading

    import numpy as np

    from tlfs.pipeline.bench import _ort_rate

    class Session:
        concurrency = 2

        def __init__(self):
            self.calls, self.lock, self.both = [], threading.Lock(), threading.Barrier(2, timeout=10)

        def run(self, batch):
            with self.lock:
                self.calls.append((threading.get_ident(), len(batch)))
                timed = len(self.calls) > 1  # the first call is the warm-up, alone
            if timed:
                self.both.wait()  # returns only once two callers are in run() at once
            return {}

    session = Session()
    batches = [np.zeros((n, 2), np.uint8) for n in (4, 4, 4, 4)]
    assert _ort_rate(session, batches) > 0
    assert sorted(n for _, n in session.calls[1:]) == [4, 4, 4, 4]  # every batch, after the warm-up
    assert len({ident for ident, _ in session.calls[1:]}) == 2


def test_rounds_are_refused_where_the_bench_runs_once():
    for mode in ("--host-only", "--stages"):
        with pytest.raises(SystemExit, match="--rounds repeats the pipeline"):
            main(["bench", mode, "--dataset", "cifar10", "--rounds", "2"])


def test_the_bench_extracts_in_the_configured_shard_size_with_at_least_four_shards(capsys, lite0, models_root,
                                                                                  monkeypatch):
    monkeypatch.setenv("TLFS_SHARD_SIZE", "8")  # as tlfs extract would cut them
    assert main(["bench", "--backbone", "efficientnet_lite0", "--device", "cpu", "--batch-size", "8", "--images", "64",
                 "--models", models_root]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pipeline_shards"] == 8
    monkeypatch.setenv("TLFS_SHARD_SIZE", "2500")  # larger than a quarter of the images: a quarter
    assert main(["bench", "--backbone", "efficientnet_lite0", "--device", "cpu", "--batch-size", "8", "--images", "64",
                 "--models", models_root]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pipeline_shards"] == 4


def test_bench_refuses_fewer_images_than_a_batch(capsys, models_root):
    assert main(["bench", "--backbone", "efficientnet_lite0", "--batch-size", "64", "--images", "8", "--models", models_root]) == 1
    assert "must be at least --batch-size" in capsys.readouterr().err


def test_the_host_only_bench_runs_the_pipeline_without_inference_beside_decoding_alone(capsys, tmp_path, lite0, models_root):
    from tlfs.pipeline.bench import photo_dataset

    source = photo_dataset(tmp_path / "photos.tar", 40)
    code = main(["bench", "--host-only", "--dataset", "photos", "--source", str(source), "--decode-workers", "2",
                 "--models", models_root])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["images"] == 40 and result["decode_workers"] == 2
    # where the workers take every core the rest of the host side runs in their time, and the bench says so
    assert ("decode workers take all" in out) == (result["decode_workers"] >= result["cores"])
    # as beside a GPU: the writer threads below decoding's priority where the workers leave cores free
    assert result["writers_yield"] == (result["decode_workers"] < result["cores"])
    assert ("below decoding" in out) == result["writers_yield"]
    assert result["decode_images_per_s"] > 0 and result["host_images_per_s"] > 0
    assert result["decode_seconds"] > 0 and result["write_seconds"] > 0 and result["parquet_bytes"] > 0
    # the extraction's CPU by thread of the run's process, and the busiest one (pipeline/thread_cpu.py)
    assert set(result["thread_cpu_us_per_image"]) <= {"run", "tlfs-read", "tlfs-infer", "tlfs-write", "tlfs-record",
                                                     "decode-results", "decode-feeder"}
    assert result["busiest_thread"] is None or 0 <= result["busiest_thread_busy"] <= 1.5
    assert 0 <= result["cores_idle"] <= 1
    assert 0 < result["session_busy"] <= 1  # the stand-in session's share of the time with a batch


def test_a_stand_in_device_measures_how_busy_the_host_side_keeps_a_gpu_of_a_given_rate(capsys, tmp_path, lite0,
                                                                                       models_root):
    from tlfs.pipeline.bench import photo_dataset

    source = photo_dataset(tmp_path / "photos.tar", 40)
    code = main(["bench", "--host-only", "--dataset", "photos", "--source", str(source), "--decode-workers", "1",
                 "--device-rate", "4000", "--batch-size", "16", "--models", models_root])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["device_rate"] == 4000 and result["batch_size"] == 16 and result["images"] == 40
    rows = result["device_batches"] * 16
    assert rows >= 40 and result["device_padding"] == round(1 - 40 / rows, 4)
    # the device computes one padded batch after another: the pipeline can never outrun it
    assert result["host_vs_device"] <= (1 - result["device_padding"]) * 1.001
    assert 0 < result["device_busy"] <= 1.001
    assert "against the device" in out


def test_the_stand_in_session_gives_each_layer_an_array_of_its_own_that_varies_with_the_pixels():
    import numpy as np

    from tlfs.pipeline.bench import HostOnlySession

    widths = {"narrow": 24, "head": 1280, "grid": 5120}  # the last wider than a 32x32 image's 3,072 values
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    outputs = HostOnlySession(runtime=None, layer_dims=widths).run(pixels)
    assert {layer: array.shape for layer, array in outputs.items()} == {layer: (5, w) for layer, w in widths.items()}
    for array in outputs.values():
        # a session's outputs: float32, C-contiguous, owning their memory (a view would keep a larger array alive)
        assert array.dtype == np.float32 and array.flags.c_contiguous and array.base is None
        assert 0.0 <= array.min() and array.max() <= 1.0
    assert np.array_equal(outputs["head"][:, :24], outputs["narrow"])  # each image's own pixels, scaled
    assert np.allclose(outputs["head"][2], pixels[2].reshape(-1)[:1280] / 255.0)
    assert len(np.unique(outputs["head"])) > 200  # photo-like values, not a constant that compresses away


def test_the_stand_in_device_is_refused_outside_the_host_only_bench():
    with pytest.raises(SystemExit, match="--device-rate is for --host-only"):
        main(["bench", "--device-rate", "1000"])


def test_photo_sized_images_are_photo_sized(tmp_path):
    import tarfile

    from PIL import Image

    from tlfs.pipeline.bench import photo_dataset

    with tarfile.open(photo_dataset(tmp_path / "p.tar", 9)) as archive:
        sizes = [Image.open(archive.extractfile(m)).size for m in archive.getmembers()]
    assert sizes.count((1024, 768)) == 2 and sizes.count((500, 375)) == 7


def test_the_stage_bench_times_each_host_stage_marks_the_serial_ones_and_projects_onto_n_cores(capsys, tmp_path):
    from tlfs.pipeline.bench import photo_dataset
    from tlfs.pipeline.runner import STAGE_THREADS

    source = photo_dataset(tmp_path / "photos.tar", 40)
    code = main(["bench", "--stages", "--dataset", "photos", "--source", str(source), "--images", "40", "--cores", "16",
                 "--batch-size", "8"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stages = result["stages"]
    assert list(stages) == ["read:imagefolder-tar", "decode", "hand-over", "batch assembly", "output copy",
                            "float16 + gather", "parquet encode + sha256", "atomic write", "shard record", "commit"]
    assert all(s["images_per_s"] > 0 for s in stages.values())
    assert result["values_per_image"] == 2048 and result["cores"] == 16  # Lite0's seven taps
    # serial or not as the runner runs it, not as the bench says
    assert stages["decode"]["serial"] is (STAGE_THREADS["decode"] is not None)
    assert stages["commit"]["thread"] == STAGE_THREADS["commit"]
    assert result["projected_images_per_s"] == min(result["serial_min_images_per_s"], result["parallel_images_per_s"])
    # the decode ceiling counts reading, decoding and the hand-over only, so the whole host side cannot beat it
    assert 0 < result["projected_vs_decode_ceiling"] <= 1.0
    assert result["decode_ceiling_images_per_s"] >= result["projected_images_per_s"]


def test_the_projection_adds_up_the_stages_of_one_thread_and_divides_the_pool_stages_over_the_cores():
    from tlfs.pipeline.stage_bench import Stage, project

    stages = [Stage("read", 100.0, "reading", ""), Stage("copy", 100.0, "reading", ""),  # one thread: 50/s
              Stage("decode", 10.0, None, ""), Stage("encode", 10.0, None, "")]  # 0.2 s per image over the cores
    assert project(stages, cores=4)["projected_images_per_s"] == 20.0  # 4 / 0.2
    assert project(stages, cores=40)["projected_images_per_s"] == 50.0  # the reading thread bounds it
    two_threads = stages + [Stage("hand-over", 50.0, "decode results", "")]  # a second serial thread: 50/s alone
    assert project(two_threads, cores=40)["serial_min_images_per_s"] == 50.0
    assert project(two_threads, cores=40)["serial_one_core_images_per_s"] == 25.0  # both on one core: 0.04 s per image
    assert project(stages, cores=40)["bound_by"] == "the reading thread"
