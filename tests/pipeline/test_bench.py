import json

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


def test_bench_refuses_fewer_images_than_a_batch(capsys, models_root):
    assert main(["bench", "--backbone", "efficientnet_lite0", "--batch-size", "64", "--images", "8", "--models", models_root]) == 1
    assert "must be at least --batch-size" in capsys.readouterr().err


def test_the_host_only_bench_runs_the_pipeline_without_inference_beside_decoding_alone(capsys, tmp_path, lite0, models_root):
    from tlfs.pipeline.bench import photo_dataset

    source = photo_dataset(tmp_path / "photos.tar", 40)
    code = main(["bench", "--host-only", "--dataset", "photos", "--source", str(source), "--decode-workers", "2",
                 "--models", models_root])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 40 and result["decode_workers"] == 2
    assert result["decode_images_per_s"] > 0 and result["host_images_per_s"] > 0
    assert result["decode_seconds"] > 0 and result["write_seconds"] > 0 and result["parquet_bytes"] > 0


def test_photo_sized_images_are_photo_sized(tmp_path):
    import tarfile

    from PIL import Image

    from tlfs.pipeline.bench import photo_dataset

    with tarfile.open(photo_dataset(tmp_path / "p.tar", 9)) as archive:
        sizes = [Image.open(archive.extractfile(m)).size for m in archive.getmembers()]
    assert sizes.count((1024, 768)) == 2 and sizes.count((500, 375)) == 7
