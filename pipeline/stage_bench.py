"""``tlfs bench --stages``: each host stage of ``tlfs extract`` alone, on real data, in
images/s on one core, with a named backbone's real layer widths; which stages are
serial (one thread whatever the cores) and which scale; and the rate the whole host
side would reach on N cores: the minimum of the serial stages' rates and of N over the
parallel stages' summed cost per image (a projection, labelled as one).

Each stage runs the pipeline's own function on this thread, so a stage's figure is what
that code costs here; whether it is serial comes from the runner (pipeline/runner.py),
not from this file.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

if TYPE_CHECKING:
    from tlfs.pipeline.plan import ExtractionRequest


@dataclass(frozen=True)
class Stage:
    name: str
    images_per_s: float
    thread: str | None  # the one thread it runs on (stages sharing a thread add up); None: a pool, it scales
    what: str

    @property
    def serial(self) -> bool:
        return self.thread is not None

    def to_json(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 1), "serial": self.serial}


def layer_widths(backbone: str, layers: list[str] | None = None) -> dict[str, int]:
    """The backbone's tap layers and their widths, from its network (random weights:
    only the shapes matter here)."""
    import torch

    from tlfs.models.backbones import load_backbone
    from tlfs.models.taps import TapNetwork

    loaded = load_backbone(backbone, random_weights=True)
    network = TapNetwork(loaded.spec, loaded.module).eval()
    with torch.inference_mode():
        outputs = network(torch.zeros((1, 32, 32, 3), dtype=torch.uint8))
    widths = {name: int(out.shape[1]) for name, out in zip(network.output_names, outputs)}
    widths = {name: widths[name] for name in loaded.spec.layer_names}
    if layers:
        unknown = [name for name in layers if name not in widths]
        if unknown:
            raise PipelineError(f"{backbone} has no layer {unknown[0]!r}: it has {', '.join(widths)}")
        widths = {name: widths[name] for name in layers}
    return widths


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _timed_each(fn: Callable[[object], object], items: list) -> float:
    """Seconds to call ``fn`` on each of ``items``, each result dropped before the next, as
    a run hands each on and frees it, so that its memory is reused. (Kept all at once,
    each result takes fresh pages: Parquet encoding then measured at half its rate.)"""
    started = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - started


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("inf")


def project(stages: list[Stage], cores: int) -> dict:
    """The host side's rate on ``cores``: no faster than its slowest serial stage, nor
    than ``cores`` over the parallel stages' summed seconds per image. Also
    ``serial_one_core_images_per_s``: the rate if every serial thread's stages ran on one
    core, one after another. The serial threads are the run's process's, and share its
    GIL where they run Python (pickling, numpy copies; zlib, file I/O and onnxruntime
    release it), so the host side's rate lies between that and the projection."""
    threads: dict[str, float] = {}
    for s in stages:
        if s.serial:
            threads[s.thread] = threads.get(s.thread, 0.0) + 1.0 / s.images_per_s
    thread_rates = {thread: 1.0 / cost for thread, cost in threads.items()}
    parallel_cost = sum(1.0 / s.images_per_s for s in stages if not s.serial)
    serial_min = min(thread_rates.values()) if thread_rates else float("inf")
    parallel = cores / parallel_cost if parallel_cost > 0 else float("inf")
    slowest = min(thread_rates, key=thread_rates.get) if thread_rates else None
    one_core = 1.0 / sum(threads.values()) if threads else float("inf")
    return {"serial_min_images_per_s": round(serial_min, 1), "parallel_images_per_s": round(parallel, 1),
            "serial_one_core_images_per_s": round(one_core, 1),
            "projected_images_per_s": round(min(serial_min, parallel), 1), "cores": cores,
            "threads": {thread: round(rate, 1) for thread, rate in thread_rates.items()},
            "bound_by": f"the {slowest} thread" if serial_min <= parallel else f"the pool stages on {cores} cores"}


STAGE_IMAGES = 5000  # the first images of the dataset each stage is timed on


def stage_bench(request: ExtractionRequest, images: int = STAGE_IMAGES, cores: int | None = None,
                workdir: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Time each host stage of ``request``'s extraction alone (its layers, batch and
    shard sizes) on the first ``images`` images of its dataset (in its sources' order:
    reading streams, so a scattered sample would time the skipping), and project them
    onto ``cores``. Stages whose first call pays for lazy set-up (Pillow's codecs,
    pyarrow's allocator) are warmed first."""
    from tlfs.models.backbones import get_spec
    from tlfs.models.runtime import available_cores
    from tlfs.pipeline.indexing import build_index
    from tlfs.pipeline.shard_writer import writer_threads

    dataset, backbone, cache_dir = request.dataset, request.backbone, request.cache_dir
    batch_size, shard_size = request.runtime.batch_size, request.shard_size
    cores = cores or available_cores()
    widths = layer_widths(backbone, list(request.layers) if request.layers else None)
    index = build_index(dataset, list(request.sources), cache_dir=cache_dir)
    entries = index.entries[:images]
    if not entries:
        raise PipelineError(f"{dataset} has no images to measure")
    log(f"{len(entries)} images of {dataset}, {backbone}: {len(widths)} layers, {sum(widths.values())} values per image")

    reading, payloads = _time_reading(index, entries, cache_dir)
    log(f"read {len(payloads)} payloads")
    decoding, decoded = _time_decoding(payloads, get_spec(backbone).input_size, dataset)
    batching, outputs = _time_batching(decoded, batch_size, widths, _chunk_sizes(payloads))
    writing, encoded = _time_encoding(outputs, shard_size // batch_size, widths, request.codec)
    storing = _time_storing(encoded, dataset, widths, workdir)
    stages = reading + decoding + batching + writing + storing

    projection = project(stages, cores)
    ceiling = project(reading + decoding, cores)["projected_images_per_s"]  # what `--host-only` times as its decode ceiling
    projection["decode_ceiling_images_per_s"] = ceiling
    projection["projected_vs_decode_ceiling"] = round(projection["projected_images_per_s"] / ceiling, 3)
    return {"dataset": dataset, "backbone": backbone, "images": len(entries), "values_per_image": sum(widths.values()),
            "batch_size": batch_size, "shard_size": shard_size, "codec": request.codec,
            "writer_threads": writer_threads(cores),
            "stages": {s.name: s.to_json() for s in stages}, **projection}


def _stage(name: str, images: int, seconds: float, step: str, what: str) -> Stage:
    """A stage's figure, on the thread the runner gives its ``step`` (runner.STAGE_THREADS)."""
    from tlfs.pipeline.runner import STAGE_THREADS

    return Stage(name, _rate(images, seconds), STAGE_THREADS[step], what)


def _time_reading(index, entries, cache_dir: str | None) -> tuple[list[Stage], list]:
    """Reading, per source kind (one reading thread streams every source in order)."""
    from tlfs.pipeline.indexing import iter_payloads

    stages, payloads = [], []
    for kind in Counter(index.sources[e.source].format for e in entries):
        of_kind = [e for e in entries if index.sources[e.source].format == kind]
        seconds = _timed(lambda: payloads.extend(iter_payloads(index.sources, of_kind, cache_dir)))
        stages.append(_stage(f"read:{kind}", len(of_kind), seconds, "read", "the sources' bytes (or CIFAR's pixels), in order"))
    return stages, payloads


def _time_decoding(payloads: list, input_size: int, dataset: str) -> tuple[list[Stage], list[np.ndarray]]:
    """Decoding (per worker), and the hand-over of decoded images to the run's process."""
    from tlfs.pipeline.decode_pool import _decode_one

    [_decode_one(payload, input_size) for _, payload in payloads[:64]]  # warm-up: Pillow's codecs load
    seconds = _timed_each(lambda item: _decode_one(item[1], input_size), payloads)
    decoded = [_decode_one(payload, input_size)[0] for _, payload in payloads]  # again, kept for the next stages
    stages = [_stage("decode", len(decoded), seconds, "decode", "one image at a time, per worker")]
    images = [image for image in decoded if image is not None]
    if not images:
        raise PipelineError(f"none of the {len(decoded)} images of {dataset} could be decoded")
    seconds = _hand_over_cpu([payload for _, payload in payloads], [None if d is None else d.shape for d in decoded])
    stages.append(_stage("hand-over", len(decoded), seconds, "hand-over",
                         "payloads sent to a worker process in the pool's chunks and its images taken back "
                         "(the run's process's CPU, every thread of it)"))
    return stages, images


def _hand_over_cpu(payloads: list, shapes: list) -> float:
    """The CPU seconds the run's process spends (its threads together: the one that
    submits, the pool's feeder and result threads, the one taking results) to send
    ``payloads`` to a real worker process in the chunks the pool cuts, and take back
    images of the decoded ``shapes`` (the worker's decoding replaced by
    :func:`~tlfs.pipeline.decode_pool.blank_chunk`)."""
    from tlfs.pipeline.decode_pool import Decoder, blank_chunk, cut_chunks

    with Decoder(2).start() as decoder:
        decoder.submit(blank_chunk, [], []).result()  # the workers have started and imported what they run
        cpu = time.process_time()
        futures = [decoder.submit(blank_chunk, [p for p, _ in chunk], [shape for _, shape in chunk])
                   for chunk in cut_chunks(zip(payloads, shapes), payload_of=lambda item: item[0])]
        taken = sum(len(future.result()[0]) for future in futures)  # each chunk whole, as the batcher takes it
        seconds = time.process_time() - cpu
    if taken != len(payloads):
        raise PipelineError(f"the hand-over took back {taken} of {len(payloads)} images")
    return seconds


def _chunk_sizes(payloads: list) -> list[int]:
    """The images in each chunk the pool would cut from ``payloads`` (``(entry, payload)``)."""
    from tlfs.pipeline.decode_pool import cut_chunks

    return [len(chunk) for chunk in cut_chunks(payloads, payload_of=lambda item: item[1])]


def _time_batching(images: list[np.ndarray], batch_size: int, widths: dict[str, int],
                   chunk_sizes: list[int]) -> tuple[list[Stage], list[dict]]:
    """Batch assembly (batches cut out of the decoded blocks, as the run's thread does),
    and the copy of each batch's outputs (of the layers' real widths) out of the session's
    buffers."""
    from tlfs.pipeline.decode_pool import Decoded
    from tlfs.pipeline.inference import Batcher
    from tlfs.pipeline.views import VIEWS

    same_shape = [image for image in images if image.shape == images[0].shape]
    # the blocks as the workers send them (one array a chunk), made before the clock starts
    starts = np.cumsum([0, *chunk_sizes])
    blocks = [Decoded.of([(image, None) for image in same_shape[start:end]])
              for start, end in zip(starts[:-1], starts[1:]) if start < len(same_shape)]
    batches: list[np.ndarray] = []

    def cut_batches() -> None:
        batcher = Batcher(batch_size, lambda bucket: batches.append(VIEWS["original"](bucket.joined()[1])))
        start = 0
        for block in blocks:
            batcher.add(block.kept() + start, block.images)
            start += len(block)
        batcher.flush_all()

    seconds = _timed(cut_batches)
    stages = [_stage("batch assembly", len(same_shape), seconds, "batch assembly",
                     f"batches of {batch_size} cut out of the decoded blocks for the session")]
    rng = np.random.default_rng(0)
    outputs = [{layer: rng.random((len(batch), width), dtype=np.float32) for layer, width in widths.items()}
               for batch in batches]
    seconds = _timed_each(lambda out: {layer: value.copy() for layer, value in out.items()}, outputs)
    stages.append(_stage("output copy", len(same_shape), seconds, "output copy",
                         "each layer's outputs copied out of the session's buffer"))
    return stages, outputs


def _time_encoding(outputs: list[dict], batches_per_shard: int, widths: dict[str, int],
                   codec: str) -> tuple[list[Stage], list[dict]]:
    """float16 conversion and gathering per shard, then each shard's layers encoded to
    Parquet in ``codec`` and hashed."""
    from tlfs.features.schema import shard_table
    from tlfs.features.writer import encode_shard
    from tlfs.pipeline.float16_cast import Float16Cast
    from tlfs.pipeline.inference import gather_shard

    images = sum(len(next(iter(out.values()))) for out in outputs)
    per_shard = max(1, batches_per_shard)
    shard_parts = [outputs[i:i + per_shard] for i in range(0, len(outputs), per_shard)]
    positions = []
    for parts in shard_parts:
        starts = np.cumsum([0] + [len(next(iter(part.values()))) for part in parts])
        positions.append([np.arange(a, b) for a, b in zip(starts, starts[1:])])
    shards = list(zip(shard_parts, positions))
    to_float16 = Float16Cast()
    seconds = _timed_each(lambda shard: gather_shard(*shard, widths, to_float16), shards)
    gathered = [gather_shard(parts, pos, widths, to_float16) for parts, pos in shards]  # again, kept for the encoding
    stages = [_stage("float16 + gather", images, seconds, "gather",
                     "float32 -> float16, a shard's batches in its images' order")]

    def encode(matrices: dict[str, list[np.ndarray]]) -> dict:
        rows = sum(len(block) for block in next(iter(matrices.values())))
        ids = [f"test/class{n % 10}/{n:07d}.jpg" for n in range(rows)]
        labels = np.arange(rows, dtype=np.int16) % 10
        names = [f"class{label}" for label in labels]
        return {layer: encode_shard(shard_table(ids, labels, names, matrix), codec) for layer, matrix in matrices.items()}

    encode(gathered[0])  # warm-up: pyarrow's allocator grows once, on the first large table
    seconds = _timed_each(encode, gathered)
    encoded = [encode(matrices) for matrices in gathered]  # again, kept for the writes
    stages.append(_stage("parquet encode + sha256", images, seconds, "write",
                         "each shard's layers encoded to Parquet in memory and hashed"))
    return stages, encoded


def _time_storing(encoded: list[dict], dataset: str, widths: dict[str, int], workdir: str | None) -> list[Stage]:
    """The atomic write of each file, each shard's record, and the commit, in a scratch set."""
    from tlfs.features import layout
    from tlfs.features.manifest import publish
    from tlfs.features.storage import atomic_write_json
    from tlfs.features.writer import put_shard

    rows_of = [next(iter(files.values())).rows for files in encoded]
    images = sum(rows_of)
    with tempfile.TemporaryDirectory(prefix="tlfs-stages-", dir=workdir) as tmp:
        set_uri = str(Path(tmp) / "store" / dataset / "v")
        plan_id = "0123456789abcdef"
        written: list[dict] = []

        def put_all() -> None:
            for number, files in enumerate(encoded):
                record = {}
                for layer, shard in files.items():
                    relative = layout.shard_path(layer, "test", plan_id, number)
                    done = put_shard(layout.staged_uri(set_uri, plan_id, relative), shard)
                    record[layer] = {"path": relative, "rows": done.rows, "bytes": done.bytes, "sha256": done.sha256}
                written.append(record)

        stages = [_stage("atomic write", images, _timed(put_all), "write",
                         "each file written beside its target, fsynced, renamed (local disk)")]

        def records() -> None:
            for number, (files, rows) in enumerate(zip(written, rows_of)):
                record = {"shard": number, "split": "test", "read": rows, "written": rows, "rejected": 0,
                          "rejects": [], "files": files}
                atomic_write_json(layout.record_uri(set_uri, plan_id, number), record)

        stages.append(_stage("shard record", images, _timed(records), "record", "each shard's result record, written atomically"))
        manifest = {"dataset": dataset, "plan_id": plan_id, "layers": widths, "views": ["original"], "splits": ["test"],
                    "classes": [f"class{k}" for k in range(10)],
                    "counts": {"test": {"read": images, "written": images, "rejected": 0}}, "changes": {}, "rejects": [],
                    "shards": [{"layer": layer, "split": "test", "shard": number, **info}
                               for number, files in enumerate(written) for layer, info in files.items()]}
        seconds = _timed(lambda: publish(set_uri, manifest))
        stages.append(_stage("commit", images, seconds, "commit",
                             f"the version published: {len(manifest['shards'])} files checked and moved into place"))
    return stages
