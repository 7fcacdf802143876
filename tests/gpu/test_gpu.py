"""On a GPU: CUDA features against the CPU's, fp16 against fp32, a CUDA-graph run whose
graph keeps every node on the GPU, new images classified as on the CPU, one fine-tuning
epoch, and the benchmark. Run by
scripts/gpu-check.sh on the GPU machine; skipped (no GPU) in CI."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tlfs.models import sample_images
from tlfs.models.session import local_onnx, open_session
from tlfs.models.runtime import resolve_runtime
from tlfs.models.variants import FP16_MIN_COSINE, PARITY_MIN_COSINE, fixed_shape, min_cosine

pytestmark = pytest.mark.gpu
LAYERS = ["block4", "block15", "head"]


def quick_cuda(**kwargs):
    """A CUDA runtime with cuDNN's quick algorithm choice: these tests check what the
    features are, not how fast (the exhaustive search, the default, costs seconds per
    session opened, and the GPU check has minutes); the benchmark keeps the default."""
    return resolve_runtime("cuda", cudnn_conv_algo_search="HEURISTIC", **kwargs)


def photos(size: int = 32, copies: int = 64) -> np.ndarray:
    base = np.stack([sample_images.resized(sample_images.photo(n), size) for n in sample_images.PHOTOS])
    return np.concatenate([base] * (copies // len(base)))  # a full batch and then some


def test_cuda_fp32_features_equal_the_cpus(lite0):
    images = photos()
    cpu = open_session(lite0, LAYERS).run(images)
    cuda = open_session(lite0, LAYERS, quick_cuda(precision="fp32", batch_size=48)).run(images)  # 48 + 16 padded
    for layer in LAYERS:
        assert min_cosine(cuda[layer], cpu[layer]) >= PARITY_MIN_COSINE, layer


def test_cuda_fp16_features_agree_with_fp32(lite0):
    images = photos()
    cpu = open_session(lite0, LAYERS).run(images)
    fp16 = open_session(lite0, LAYERS, quick_cuda(batch_size=64)).run(images)
    for layer in LAYERS:
        assert min_cosine(fp16[layer], cpu[layer]) >= FP16_MIN_COSINE, layer


def test_a_cuda_graph_session_keeps_every_node_on_the_gpu_and_replays_correctly(lite0, tmp_path):
    import onnx
    import onnxruntime as ort

    fixed = fixed_shape(local_onnx(lite0, precision="fp16"), 32, 32, 32, cache_dir=str(tmp_path))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(fixed), options, providers=[("CUDAExecutionProvider", {"prefer_nhwc": "1"})])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert not [op for op in ops if op.startswith("Memcpy")], ops

    graph = open_session(lite0, LAYERS, quick_cuda(batch_size=32))
    plain = open_session(lite0, LAYERS, quick_cuda(batch_size=32, cuda_graph=False))
    rng = np.random.default_rng(0)
    for _ in range(3):  # capture, then replays on new inputs in the same buffers
        images = rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8)
        a, b = graph.run(images), plain.run(images)
        for layer in LAYERS:
            np.testing.assert_allclose(a[layer], b[layer], rtol=1e-3, atol=1e-3)


def test_two_sets_of_bound_buffers_with_cuda_graphs_on_two_threads_give_each_batch_its_own_features(lite0):
    """CUDA's default: two sets per shape, each its own session, CUDA graph and stream,
    run from two threads at once; each batch's features equal one set's, run alone."""
    from concurrent.futures import ThreadPoolExecutor

    two = open_session(lite0, LAYERS, quick_cuda(batch_size=32))
    one = open_session(lite0, LAYERS, quick_cuda(batch_size=32, bound_buffers=1))
    assert two.concurrency == 2 and one.concurrency == 1
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(two.run, batches))
    for batch, have in zip(batches, got):
        want = one.run(batch)
        for layer in LAYERS:
            np.testing.assert_allclose(have[layer], want[layer], rtol=1e-3, atol=1e-3)


def test_predict_on_cuda_gives_the_cpus_classes(tmp_path, lite0, models_root):
    """``tlfs predict --device cuda``: the set's images through its backbone on the GPU (fixed
    shapes, bound buffers, at the set's fp32), classified as on the CPU."""
    from dataclasses import replace

    from tlfs import features
    from tlfs.pipeline.fit import fit
    from tlfs.pipeline.predict import PredictRequest, predict
    from tests.conftest import folder_images, write_tree
    from tests.extraction import run_extract

    source = write_tree(tmp_path / "images", folder_images(per_class=8))
    store = str(tmp_path / "store")
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False)
    fit(features.open_set("colors", "efficientnet_lite0", store=store), ["head"], "softmax", log=lambda *_: None)
    request = PredictRequest("colors", "efficientnet_lite0", (str(source / "test"),), "softmax-head", store)
    cpu = predict(request, log=lambda *_: None)
    cuda = predict(replace(request, device="cuda", batch_size=32), log=lambda *_: None)  # 24 images: a batch padded to 32
    assert [p.label for p in cuda] == [p.label for p in cpu] and len(cpu) == 24
    np.testing.assert_allclose([p.probability for p in cuda], [p.probability for p in cpu], atol=1e-3)


def test_similar_on_cuda_gives_the_cpus_matches(tmp_path, lite0, models_root):
    """``tlfs similar --device cuda``: the images searched for run through the set's backbone
    on the GPU, and find the stored images the CPU finds, in its order."""
    from dataclasses import replace

    from tlfs.pipeline.similar import SimilarRequest, similar_images
    from tests.conftest import folder_images, write_tree
    from tests.extraction import run_extract

    source = write_tree(tmp_path / "images", folder_images(per_class=8))
    store = str(tmp_path / "store")
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False)
    request = SimilarRequest("colors", "efficientnet_lite0", (str(source / "test"),), k=3, store=store)
    cpu = similar_images(request, log=lambda *_: None)
    cuda = similar_images(replace(request, device="cuda", batch_size=32), log=lambda *_: None)
    assert list(cuda["image_id"]) == list(cpu["image_id"]) and len(cpu) == 24 * 3
    assert (cpu["image_id"].iloc[::3].to_numpy() == [p.split("images/", 1)[1] for p in cpu["image"].iloc[::3]]).all()
    np.testing.assert_allclose(cuda["similarity"], cpu["similarity"], atol=1e-3)


def test_an_exported_classifier_on_cudas_provider_gives_the_cpus_classes(tmp_path, lite0, models_root):
    """The file ``tlfs export-classifier`` writes, run with onnxruntime's CUDA provider (its
    tree ensemble, where a LightGBM head has one, stays on the CPU), as on the CPU."""
    import onnxruntime as ort

    from tlfs import features
    from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier
    from tlfs.pipeline.fit import fit
    from tests.conftest import folder_images, write_tree
    from tests.extraction import run_extract

    source = write_tree(tmp_path / "images", folder_images(per_class=8))
    store = str(tmp_path / "store")
    run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False)
    fit(features.open_set("colors", "efficientnet_lite0", store=store), ["head"], "lightgbm", log=lambda *_: None)
    output = str(tmp_path / "colors.onnx")
    export_classifier(ClassifierRequest("colors", "efficientnet_lite0", "lightgbm-head", output, store), log=lambda *_: None)
    batch = photos(32, copies=4)
    cpu = ort.InferenceSession(output, providers=["CPUExecutionProvider"]).run(None, {"images": batch})
    cuda_session = ort.InferenceSession(output, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert cuda_session.get_providers()[0] == "CUDAExecutionProvider"
    cuda = cuda_session.run(None, {"images": batch})
    assert (cuda[1] == cpu[1]).all()
    np.testing.assert_allclose(cuda[0], cpu[0], atol=1e-3)


def test_the_benchmark_fills_every_row_on_cuda(tmp_path, models_root):
    from tlfs.pipeline.bench import bench
    from tlfs.pipeline.plan import ExtractionRequest

    request = ExtractionRequest("bench", (), "efficientnet_lite0", str(tmp_path / "store"), models_root,
                                runtime=resolve_runtime("cuda"))
    result = bench(request, images=2048, log=lambda *_: None)
    for key in ("torch_fp32", "torch_fp16", "ort_fp32", "ort_fp16", "pipeline"):
        assert result[key] and result[key] > 0, key
    assert result["precision"] == "fp16" and result["batch_size"] == 256


# last: the slowest (a fine-tuning run), so that a time limit on the whole check cuts it, not the others
def test_one_finetuning_epoch_on_cuda(tmp_path, cifar_sources):
    from tlfs.pipeline.config import FinetuneConfig
    from tlfs.pipeline.finetune import FinetuneRequest, finetune

    # 1,000 images per split, one epoch per phase: on the CPU this reached 67% (H100 run
    # 2026-11-26 of the older form, 200 images and two steps at lr 1e-4, reached only 13%)
    request = FinetuneRequest("cifar10", cifar_sources, "efficientnet_lite0", str(tmp_path / "models"),
                              FinetuneConfig(head_epochs=1, epochs=1, lr=0.02, schedule="cosine", batch_size=64), limit=1000,
                              device="cuda")
    result = finetune(request, show_progress=False, log=lambda *_: None)
    assert result["test_accuracy"] > 0.5  # 10 classes, chance 0.1
