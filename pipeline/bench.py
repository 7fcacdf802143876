"""``tlfs bench``: competitors side by side in one process, on the same device.

(a) PyTorch eager fp32 — what the tutorials do; (b) PyTorch fp16 channels_last (CUDA
only; null on CPU); (c) onnxruntime inference only; (d) the full ``tlfs extract``
pipeline from image files to a committed Parquet feature set (export excluded: it is
reused). (a)-(c) run the same network (uint8 NHWC in, resize + normalize in the
network, pooled taps out) on the same uint8 batches; (d) decodes real JPEG files.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import PipelineError

IMAGE_SIZE = 32  # CIFAR-sized inputs, resized to the backbone's input inside the network


def synthetic_dataset(folder: Path, images: int, seed: int = 0) -> Path:
    """A JPEG image-folder tar (``test/<class>/<n>.jpg``) of smooth random 32x32 images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path = folder / "bench.tar"
    with tarfile.open(path, "w") as archive:
        for n in range(images):
            low = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            img = Image.fromarray(low).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=90)
            info = tarfile.TarInfo(f"test/class{n % 10}/{n:06d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(info, buffer)
    return path


def _rate(fn: Callable[[np.ndarray], object], batches: list[np.ndarray], sync: Callable[[], None] = lambda: None) -> float:
    fn(batches[0])  # warm-up: allocations, autotuning, lazy initialisation
    sync()
    started = time.perf_counter()
    for batch in batches:
        fn(batch)
    sync()
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def bench(
    backbone: str,
    device: str = "cpu",
    batch_size: int = 64,
    images: int = 512,
    models: str | None = None,
    weights: str | None = None,
    random_weights: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    import torch

    from models.backbones import load_backbone
    from models.export import export
    from models.runtime import open_session
    from models.taps import TapNetwork
    from pipeline import extract

    if images < batch_size:
        raise PipelineError(f"--images ({images}) must be at least --batch-size ({batch_size})")
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for but PyTorch sees no CUDA device")
    with tempfile.TemporaryDirectory(prefix="tlfs-bench-") as tmp:
        tmp_path = Path(tmp)
        models_root = models or str(tmp_path / "models")
        artifact = export(backbone, models_root, weights=weights, random_weights=random_weights, log=log)
        loaded = load_backbone(backbone, weights=weights, random_weights=random_weights)
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, 255, (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
                   for _ in range(images // batch_size)]
        counted = sum(len(b) for b in batches)
        results: dict[str, float | None] = {}

        torch_device = torch.device(device)
        network = TapNetwork(loaded.spec, loaded.module).eval().to(torch_device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def torch_fp32(batch: np.ndarray):
            with torch.inference_mode():
                return [t.cpu() for t in network(torch.from_numpy(batch).to(torch_device))]

        log(f"(a) PyTorch eager fp32 on {device}, {counted} images, batch {batch_size} ...")
        results["torch_fp32"] = _rate(torch_fp32, batches, sync)

        if device == "cuda":
            half = TapNetwork(loaded.spec, loaded.module).eval().to(torch_device).half().to(memory_format=torch.channels_last)

            def torch_fp16(batch: np.ndarray):
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                    return [t.float().cpu() for t in half(torch.from_numpy(batch).to(torch_device))]

            log("(b) PyTorch fp16 channels_last ...")
            results["torch_fp16"] = _rate(torch_fp16, batches, sync)
        else:
            results["torch_fp16"] = None  # fp16 convolutions are not a CPU option in PyTorch

        session = open_session(artifact, device=device)
        log("(c) onnxruntime inference only ...")
        results["ort"] = _rate(session.run, batches)

        log(f"(d) full pipeline: {counted} JPEG files -> committed Parquet ...")
        source = synthetic_dataset(tmp_path, counted)
        started = time.perf_counter()
        summary = extract.run("bench", [str(source)], backbone, str(tmp_path / "store"), models_root,
                              device=device, batch_size=batch_size, shard_size=max(counted // 4, batch_size),
                              weights=weights, random_weights=random_weights, show_progress=False, log=lambda *_: None)
        results["pipeline"] = summary["rows"] / (time.perf_counter() - started)

    ratios = {
        "pipeline_vs_torch_fp32": results["pipeline"] / results["torch_fp32"],
        "pipeline_vs_torch_fp16": results["pipeline"] / results["torch_fp16"] if results["torch_fp16"] else None,
    }
    return {
        "backbone": backbone, "device": device, "batch_size": batch_size, "images": counted,
        **{k: (round(v, 1) if v is not None else None) for k, v in results.items()},
        **{k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
    }
