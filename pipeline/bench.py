"""``tlfs bench``: competitors side by side in one process, on the same device, in the
steady state (each row's warm-up batch is not timed).

(a) PyTorch eager fp32 — what the tutorials do; (b) PyTorch fp16 channels_last on its
own copy of the network (CUDA only; null on CPU); (c) onnxruntime fp32 and (c16) fp16,
inference only, through the pipeline's own session (bound buffers, fixed shapes and
CUDA graphs on CUDA), from as many threads at once as the pipeline calls it from; (d)
the full ``tlfs extract`` pipeline from JPEG files to Parquet shards on the session (c)
timed, warm (indexing and the commit are reported apart, not in the rate), then (c) once
more. (a)-(c) run the same network (uint8 NHWC in, resize +
normalize in the network, pooled taps out) on the same uint8 batches.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from tlfs.pipeline.errors import PipelineError

if TYPE_CHECKING:
    from tlfs.models.runtime import Runtime
    from tlfs.models.session import TapSession
    from tlfs.pipeline.plan import ExtractionRequest
    from tlfs.pipeline.extract import RunOptions

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


def photo_dataset(path: Path, images: int, seed: int = 0) -> Path:
    """An image-folder tar (``train/<photo>/<n>.jpg``, ``test/...``: 80/20) of photo-sized
    JPEGs, about 500x375 with one in eight at 1024x768: random crops, flips and scales of
    scikit-image's sample photos, quality 90. Host-side benchmarks read real-sized work."""
    from PIL import Image

    from tlfs.models.sample_images import PHOTOS, photo

    rng = np.random.default_rng(seed)
    bases = {name: Image.fromarray(photo(name)) for name in PHOTOS}
    with tarfile.open(path, "w") as archive:
        for n in range(images):
            name = PHOTOS[n % len(PHOTOS)]
            base = bases[name]
            size = (1024, 768) if n % 8 == 0 else (500, 375)
            scale = rng.uniform(0.6, 1.0)
            w, h = int(base.width * scale), int(base.height * scale)
            left, top = int(rng.integers(0, base.width - w + 1)), int(rng.integers(0, base.height - h + 1))
            img = base.crop((left, top, left + w, top + h)).resize(size, Image.Resampling.BILINEAR)
            if n % 2:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=90)
            split = "test" if n % 5 == 0 else "train"
            info = tarfile.TarInfo(f"{split}/{name}/{n:07d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(info, buffer)
    return path


def _rate(fn: Callable[[np.ndarray], object], batches: list[np.ndarray], sync: Callable[[], None] = lambda: None,
          callers: int = 1) -> float:
    """Images/s of ``fn`` over ``batches``, called from ``callers`` threads at once (each takes the next batch)."""
    fn(batches[0])  # warm-up: allocations, autotuning, lazy initialisation
    sync()
    started = time.perf_counter()
    if callers > 1:
        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(fn, batches))
    else:
        for batch in batches:
            fn(batch)
    sync()
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def _ort_rate(session: TapSession, batches: list[np.ndarray]) -> float:
    """onnxruntime alone on ``session``, fed as the pipeline feeds it: from as many threads at once
    as it can use (:attr:`TapSession.concurrency`), so the pipeline is compared with the session at its best."""
    return _rate(session.run, batches, callers=session.concurrency)


# Enough images for the steady state: the pipeline's fill and drain (the first batch
# decoded before inference starts, the last shard written after it ends) are a fixed
# cost, a larger share of a short run (docs/benchmarks.md: Lite0 on 2 cores,
# pipeline_vs_ort medians 0.906 with 512 images, 0.978 with 2,048).
DEFAULT_IMAGES = {"cpu": 2048, "cuda": 20480}


class Round(NamedTuple):
    """One pipeline run of the bench between two runs of onnxruntime alone."""

    pipeline: float  # images/s
    ort_before: float
    ort_after: float
    summary: dict  # the run's tlfs extract summary

    @property
    def ratio(self) -> float:
        return self.pipeline / ((self.ort_before + self.ort_after) / 2)


def bench(request: ExtractionRequest, images: int | None = None, decode_workers: int = 0, sessions: int | None = None,
          rounds: int = 1, log: Callable[[str], None] = print) -> dict:
    """Rows (a)-(d) for ``request``'s backbone (its weights), model store and runtime, on
    ``images`` images (default: the device's); the pipeline row extracts CIFAR-sized
    JPEGs made here into a temporary store (the request's dataset and store are not read),
    in shards of the request's size, or a quarter of the images where that is less.
    onnxruntime's rows run on the session the pipeline runs on (``sessions`` side by side,
    default: as ``tlfs extract`` opens them). ``rounds`` pipeline runs, each followed by
    onnxruntime alone again and compared with the mean of the two runs bracketing it; the
    round of the median ratio is reported (the lower of the two middle ones for an even count),
    every round's ratio beside it: on a machine whose speed drifts, steadier than one round."""
    import torch

    from tlfs.models.backbones import load_backbone
    from tlfs.models.export import export
    from tlfs.models.variants import with_int8

    backbone, runtime, weights, random_weights = request.backbone, request.runtime, request.weights, request.random_weights
    device, batch_size = runtime.device, runtime.batch_size
    images = images or DEFAULT_IMAGES[device]
    if images < batch_size:
        raise PipelineError(f"--images ({images}) must be at least --batch-size ({batch_size})")
    if rounds < 1:
        raise PipelineError(f"--rounds must be 1 or more, not {rounds}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for but PyTorch sees no CUDA device")
    with tempfile.TemporaryDirectory(prefix="tlfs-bench-") as tmp:
        tmp_path = Path(tmp)
        artifact = export(backbone, request.model_store, weights=weights, random_weights=random_weights, log=log)
        if runtime.precision == "int8":
            artifact = with_int8(artifact, log)
        loaded = load_backbone(backbone, weights=weights, random_weights=random_weights)
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, 255, (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
                   for _ in range(images // batch_size)]
        counted = sum(len(b) for b in batches)
        ort_rows, session = _onnxruntime_rows(artifact, runtime, batches, sessions, log)
        results = {**_torch_rows(loaded, device, batches, log), **ort_rows}
        extraction = replace(request, dataset="bench", sources=(str(synthetic_dataset(tmp_path, counted)),),
                             # shards of the request's size (as tlfs extract cuts them; 2,500 by default), at
                             # least four: the last shard's files, written after the last batch, stay a small part
                             shard_size=min(request.shard_size, max(counted // 4, batch_size)))
        measured: list[Round] = []
        before = results[f"ort_{runtime.precision}"]
        for number in range(rounds):
            log(f"(d) full pipeline{f' {number + 1} of {rounds}' if rounds > 1 else ''}: {counted} JPEG files -> "
                "Parquet shards, the same warmed session ...")
            into = replace(extraction, store=str(tmp_path / f"store-{number}"))  # a new store: nothing reused
            summary = _pipeline_row(into, session, decode_workers)
            # onnxruntime alone once more, after the pipeline: the ratio to the mean of the two
            # runs bracketing it is steadier than to one run taken before it
            log(f"(c) onnxruntime {runtime.precision} inference only, again ...")
            after = _ort_rate(session, batches)
            measured.append(Round(summary["rows"] / summary["extract_seconds"], before, after, summary))
            before = after

    median = sorted(measured, key=lambda run: run.ratio)[(rounds - 1) // 2]  # the lower middle one for an even count
    results["pipeline"], results[f"ort_{runtime.precision}"], again, summary = median
    busy = summary["session_busy"]
    ratios = {
        "pipeline_vs_ort": median.ratio,
        # the pipeline's rate is the session's own while it had a batch, times the share of the time it had one:
        # this ratio below 1, its batches ran slower beside the host side's work; session_busy below 1, it waited
        "pipeline_session_vs_ort": median.ratio / busy if busy else None,
        "pipeline_vs_torch_fp32": results["pipeline"] / results["torch_fp32"],
        "pipeline_vs_torch_fp16": results["pipeline"] / results["torch_fp16"] if results["torch_fp16"] else None,
    }
    return {
        "backbone": backbone, "device": device, "precision": runtime.precision, "batch_size": batch_size, "images": counted,
        "pipeline_rows": summary["rows"], "pipeline_shards": summary["shards"],
        "pipeline_plan_seconds": summary["plan_seconds"], "pipeline_commit_seconds": summary["commit_seconds"],
        "decode_workers": summary["decode_workers"], "sessions": session.sessions,
        f"ort_{runtime.precision}_after_pipeline": round(again, 1),
        "pipeline_vs_ort_rounds": [round(run.ratio, 3) for run in measured],
        "pipeline_session_busy": busy,
        # where the session had no batch: before its first one, and after its last (the last shards' files)
        "pipeline_session_first_batch_seconds": summary["session_first_batch_seconds"],
        "pipeline_session_after_last_batch_seconds": summary["session_after_last_batch_seconds"],
        "pipeline_extract_seconds": summary["extract_seconds"],
        "pipeline_writers": summary["writers"], "pipeline_writers_busy": summary["writers_busy"],
        **{f"pipeline_{k}": summary[k] for k in THREAD_FIELDS},
        **{k: (round(v, 1) if v is not None else None) for k, v in results.items()},
        **{k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
    }


def _torch_rows(loaded, device: str, batches: list[np.ndarray], log) -> dict:
    """(a) PyTorch eager fp32; (b) PyTorch fp16 channels_last on its own copy (CUDA only)."""
    import copy

    import torch

    from tlfs.models.taps import TapNetwork

    torch_device = torch.device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    network = TapNetwork(loaded.spec, loaded.module).eval().to(torch_device)

    def fp32(batch: np.ndarray):
        with torch.inference_mode():
            return [t.cpu() for t in network(torch.from_numpy(batch).to(torch_device))]

    log(f"(a) PyTorch eager fp32 on {device}, {sum(len(b) for b in batches)} images, batch {len(batches[0])} ...")
    rows = {"torch_fp32": _rate(fp32, batches, sync), "torch_fp16": None}  # fp16 convolutions are not a CPU option
    if device == "cuda":
        # its own copy: .half() must not convert parameters the fp32 network shares
        half = TapNetwork(loaded.spec, copy.deepcopy(loaded.module)).eval().to(torch_device).half()
        half = half.to(memory_format=torch.channels_last)

        def fp16(batch: np.ndarray):
            with torch.inference_mode():
                return [t.float().cpu() for t in half(torch.from_numpy(batch).to(torch_device))]

        log("(b) PyTorch fp16 channels_last ...")
        rows["torch_fp16"] = _rate(fp16, batches, sync)
    return rows


def _onnxruntime_rows(artifact, runtime: Runtime, batches: list[np.ndarray], sessions: int | None,
                      log) -> tuple[dict, TapSession]:
    """(c) onnxruntime fp32, (c16) fp16 (CUDA only) and (c8) int8 (where asked for), inference
    through the pipeline's session; and the session of ``runtime``'s own precision, warmed,
    which the pipeline row then runs on (the same session, so the ratio compares the pipeline
    alone)."""
    from tlfs.models.session import open_session
    from tlfs.models.runtime import resolve_runtime

    rows, own = {"ort_fp16": None}, None
    measured = ("fp32", "fp16") if runtime.device == "cuda" else ("fp32", "int8") if runtime.precision == "int8" else ("fp32",)
    for precision in measured:
        mine = precision == runtime.precision
        chosen = runtime if mine else resolve_runtime(runtime.device, precision, runtime.batch_size)
        session = open_session(artifact, runtime=chosen, sessions=sessions)
        log(f"(c) onnxruntime {precision} inference only ...")
        rows[f"ort_{precision}"] = _ort_rate(session, batches)
        own = session if mine else own
    return rows, own


def _pipeline_row(request: ExtractionRequest, session: TapSession, decode_workers: int) -> dict:
    """(d) ``tlfs extract`` of ``request`` (JPEG files to Parquet shards) on a warmed ``session``."""
    from tlfs.pipeline.extract import RunOptions
    from tlfs.pipeline.decode_pool import Decoder

    with Decoder(decode_workers, request.runtime.device).start() as decoder:  # started, as the session is warm
        return extract_watched(request, RunOptions(show_progress=False, session=session, decoder=decoder))


THREAD_FIELDS = ("thread_cpu_us_per_image", "busiest_thread", "busiest_thread_busy", "cores_idle")


def extract_watched(request: ExtractionRequest, options: RunOptions) -> dict:
    """``tlfs extract``'s summary of ``request``, with the CPU its process's threads spent
    extracting (planning and commit aside), in µs an image by thread role, and the single
    busiest thread with its share of the extraction's wall time: a serial thread near 1.0
    is the run's bound; and the share of the machine's CPU time idle meanwhile (pipeline/thread_cpu.py)."""
    from tlfs.pipeline import extract
    from tlfs.pipeline.thread_cpu import ThreadCPU

    with ThreadCPU() as threads:
        started = time.perf_counter()
        summary = extract.run(request, options, log=lambda *_: None)
    planned = started + summary["plan_seconds"]  # the run's own clock starts a moment later: within a sample
    window = (planned, planned + summary["extract_seconds"])
    busiest, rows = threads.busiest(*window), summary["rows"]
    by_role = sorted(threads.between(*window).items(), key=lambda role_seconds: -role_seconds[1])
    per_image = {role: round(seconds / rows * 1e6, 1) for role, seconds in by_role} if rows else {}
    idle = threads.cores_idle(*window)
    return {**summary, "thread_cpu_us_per_image": per_image, "busiest_thread": busiest[0] if busiest else None,
            "busiest_thread_busy": round(busiest[1], 2) if busiest else None,
            "cores_idle": round(idle, 3) if idle is not None else None}


PIXEL_SCALE = np.float32(1 / 255)


class HostOnlySession:
    """Stands in for the ONNX session in ``tlfs bench --host-only``: the same outputs (one
    float32 vector per tap layer, of each layer's width), filled from the pixels at almost
    no cost, so that reading, decoding, batching and Parquet writing run exactly as in
    ``tlfs extract`` and are all that is measured."""

    opening_seconds = 0.0  # nothing to open, so no part of it either
    opening_parts: dict[str, float] = {}

    def __init__(self, runtime, layer_dims: dict[str, int]) -> None:
        from tlfs.models.session import BusyClock

        self.runtime = runtime
        self.layer_dims = layer_dims
        self.busy = BusyClock()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.busy.running():
            return self.outputs(batch)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Each layer's float32 ``[images, width]`` matrix, an array of its own as a session's
        outputs are, from each image's first pixels scaled to [0, 1] (data of a photo's entropy);
        one pass over the output's bytes, so that the stand-in itself costs about 0.6 µs an image
        for Lite0's 2,048 values, not the 15.7 of a float copy of the pixels resized per layer
        (docs/benchmarks.md: the host-only bench's stand-in session)."""
        pixels = batch.reshape(len(batch), -1)
        return {layer: np.multiply(pixels[:, :dim] if dim <= pixels.shape[1] else np.resize(pixels, (len(batch), dim)),
                                   PIXEL_SCALE, dtype=np.float32)
                for layer, dim in self.layer_dims.items()}


class StandInDevice(HostOnlySession):
    """Stands in for a GPU in ``tlfs bench --host-only --device-rate N``: a device that
    computes a batch of the runtime's size in ``batch_size / N`` seconds, a short batch as
    long as a whole one (padded, as a fixed-shape CUDA graph is), one batch after another,
    fed by two threads (as the two sets of bound buffers on CUDA: while it computes one
    batch, the next waits in its queue). Waiting on it releases the GIL, as onnxruntime's
    CUDA run does. So the host side of ``tlfs extract`` is measured feeding a GPU of that
    rate, without one: how much of the device's time the pipeline keeps it busy."""

    concurrency = 2

    def __init__(self, runtime, layer_dims: dict[str, int], images_per_s: float) -> None:
        super().__init__(runtime, layer_dims)
        self.batch_seconds = runtime.batch_size / images_per_s
        self.batches = 0  # handed to the device, short ones included
        self._queue = threading.Lock()
        self._free_at = 0.0  # when the device finishes the batches it has

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.busy.running():
            with self._queue:  # a batch starts when the one before it ends
                self._free_at = max(time.perf_counter(), self._free_at) + self.batch_seconds
                done_at = self._free_at
                self.batches += 1
            time.sleep(max(0.0, done_at - time.perf_counter()))
            return self.outputs(batch)


def host_only(request: ExtractionRequest, decode_workers: int = 0, log: Callable[[str], None] = print,
              device_rate: float | None = None) -> dict:
    """The host side of ``tlfs extract`` of ``request`` alone, into a temporary store:
    (1) reading and decoding every image with ``decode_workers`` (the ceiling this
    machine sets), then (2) the whole pipeline (plan, read, decode, batch, write Parquet,
    commit) with inference replaced by :class:`HostOnlySession`, or with ``device_rate``
    (images/s) by :class:`StandInDevice`, a device of that rate."""
    from tlfs.models.export import export
    from tlfs.models.runtime import available_cores
    from tlfs.pipeline.extract import RunOptions
    from tlfs.pipeline.indexing import build_index, check_sources
    from tlfs.pipeline.decode_pool import Decoder
    from tlfs.pipeline.shard_writer import writer_threads, writers_yield

    dataset, cache_dir, runtime = request.dataset, request.cache_dir, request.runtime
    check_sources(dataset, request.sources)  # before the export
    with tempfile.TemporaryDirectory(prefix="tlfs-bench-host-") as tmp:
        artifact = export(request.backbone, request.model_store, log=log)
        size = artifact.card["preprocessing"]["input_size"]
        index = build_index(dataset, list(request.sources), limit=request.limit, cache_dir=cache_dir)
        log(f"(1) reading and decoding {len(index.entries)} images of {dataset} ...")
        with Decoder(decode_workers).start() as decoder:  # as for a GPU; both steps share the started workers
            started = time.perf_counter()
            decoded = sum(1 for _ in decoder.decoded(index.sources, index.entries, size, cache_dir))
            decode_wall = time.perf_counter() - started
            layers = dict(artifact.card["layers"])
            if device_rate:
                log(f"(2) the whole pipeline, inference replaced by a device of {device_rate:,.0f} images/s ...")
                session = StandInDevice(runtime, layers, device_rate)
            else:
                log("(2) the whole pipeline, inference replaced by a trivial session ...")
                session = HostOnlySession(runtime, layers)
            # the writer pool too as for a GPU (on the CPU the session would have taken the cores)
            cores = available_cores()
            summary = extract_watched(replace(request, store=str(Path(tmp) / "store")),
                                      RunOptions(show_progress=False, decoder=decoder, session=session,
                                                 writers=writer_threads(cores),
                                                 writers_yield=writers_yield(decoder.workers, cores)))
    host_rate = summary["rows"] / summary["extract_seconds"] if summary["extract_seconds"] > 0 else None
    decode_rate = decoded / decode_wall if decode_wall > 0 else None
    return {
        "dataset": dataset, "images": decoded, "decode_workers": summary["decode_workers"], "cores": available_cores(),
        "batch_size": runtime.batch_size, "decode_images_per_s": round(decode_rate, 1) if decode_rate else None,
        "host_images_per_s": round(host_rate, 1) if host_rate else None,
        "host_vs_decode": round(host_rate / decode_rate, 3) if host_rate and decode_rate else None,
        "session_busy": summary["session_busy"],  # the stand-in session had a batch: below 1, it waited on the host side
        "session_first_batch_seconds": summary["session_first_batch_seconds"],
        "session_after_last_batch_seconds": summary["session_after_last_batch_seconds"],
        "plan_seconds": summary["plan_seconds"], "extract_seconds": summary["extract_seconds"],
        "commit_seconds": summary["commit_seconds"],
        # where the pipeline's time went (reading and decoding: summed over the threads and processes doing it)
        "read_seconds": summary["read_seconds"], "decode_seconds": summary["decode_seconds"],
        "batch_seconds": summary["infer_seconds"], "write_seconds": summary["parquet_write_seconds"],
        "writers": summary["writers"], "writers_busy": summary["writers_busy"], "writers_yield": summary["writers_yield"],
        "parquet_bytes": summary["parquet_bytes"], "codec": summary["codec"],
        **{k: summary[k] for k in THREAD_FIELDS},
        **(_device_fields(session, summary, len(request.views), device_rate, host_rate) if device_rate else {}),
    }


def _device_fields(device: StandInDevice, summary: dict, views: int, device_rate: float,
                   host_rate: float | None) -> dict:
    """How well the host side fed :class:`StandInDevice`: its rate against the device's, the
    share of the extraction's time the device had work, and the share of its batches' rows
    that were padding (short batches; each view of an image is a row of its own)."""
    computing = device.batches * device.batch_seconds
    rows = device.batches * device.runtime.batch_size
    return {"device_rate": device_rate, "device_batches": device.batches,
            "host_vs_device": round(host_rate / device_rate, 3) if host_rate else None,
            "device_busy": round(computing / summary["extract_seconds"], 3) if summary["extract_seconds"] > 0 else None,
            "device_padding": round(1 - summary["rows"] * views / rows, 4) if rows else None}
