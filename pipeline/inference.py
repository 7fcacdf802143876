"""Batched inference, overlapped with the host's work.

The run's thread takes the decoded stream's blocks (pipeline/decode_pool.py: a chunk's
images as one array) and cuts batches of one image shape out of them (:class:`Batcher`:
slices of a block, joined where a batch spans two), never image by image, and on through
a shard's end into the next shard's images (:class:`ShardBatches`); the session runs on threads of its own
(:class:`Inference`: one per set of bound device buffers, two on CUDA, so that one batch
is copied in while another computes; on the CPU one per session side by side, so that
neither session waits for the other's half of a batch), at most one batch beyond them ahead, so the next
batch is assembled while the device computes; a batch's outputs come back as a future, which the
writer pool gathers in the shard's image order and converts to float16
(:func:`gather_layer`, by onnxruntime's vectorized Cast: pipeline/float16_cast.py), off
both threads. Host memory stays bounded: batches in flight here, shards waiting for their
last batch (at most a batch of images beside the shard being batched), shards in flight in
the writer pool (pipeline/shard_writer.py).
"""

from __future__ import annotations

import operator
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from tlfs.features.schema import FEATURE_DTYPE, row_columns
from tlfs.models.session import TapSession
from tlfs.pipeline.dataset_index import Entry, Reject
from tlfs.pipeline.decode_pool import DecodedBlock
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.float16_cast import Float16Cast
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.views import VIEWS

MAX_OPEN_BUCKETS = 8  # distinct image sizes batched separately before a forced flush
# A shard's batches are cast to float16 in blocks of about this many bytes of float32: small
# enough for a core's own cache (two writer threads' working sets share the rest), large
# enough that the casts' and the encoder's per-block costs stay small (Lite0's 64-row batches
# of its narrow taps are a few KB). docs/benchmarks.md: the writer pool, per batch against blocks.
CAST_BLOCK_BYTES = 1 << 20
READY = 1  # batches handed to the session's threads beyond one per thread: assembled and waiting


class Batcher:
    """Rows of images (with their positions in the shard) gathered into batches of
    ``batch_size`` images of one shape, in the order they come; ``ready(bucket)`` is
    given each full batch (and, at :meth:`flush_all`, each part-filled one). At most
    :data:`MAX_OPEN_BUCKETS` shapes wait at once: one more flushes the fullest."""

    def __init__(self, batch_size: int, ready: Callable[["Bucket"], None]) -> None:
        self.batch_size = batch_size
        self._ready = ready
        self._open: dict[tuple, Bucket] = {}

    def add(self, positions: np.ndarray, images: np.ndarray, owner: object = None) -> None:
        """Images of one shape (``[n, H, W, C]``, a block's rows or a view of them) at ``positions``
        in ``owner`` (their shard: a batch may hold the end of one shard and the start of the next)."""
        shape = images.shape[1:]
        at, rows = 0, len(positions)
        while at < rows:
            bucket = self._open.get(shape)
            if bucket is None:
                bucket = self._open[shape] = Bucket()
            # one shape too many: its first image alone, on which the fullest batch goes (as image by image)
            take = 1 if len(self._open) > MAX_OPEN_BUCKETS else min(rows - at, self.batch_size - bucket.rows)
            bucket.add(positions[at:at + take], images[at:at + take], owner)
            at += take
            if bucket.rows >= self.batch_size:
                self._flush(shape)
            elif len(self._open) > MAX_OPEN_BUCKETS:
                self._flush(max(self._open, key=lambda k: self._open[k].rows))

    def flush_all(self) -> None:
        for shape in list(self._open):
            self._flush(shape)

    def holds(self, owner: object) -> bool:
        """Whether a batch not yet given holds rows of ``owner``."""
        return any(owner in bucket.owners for bucket in self._open.values())

    def flush_holding(self, owner: object) -> None:
        """Give the batches that hold rows of ``owner``, however full."""
        for shape in [shape for shape, bucket in self._open.items() if owner in bucket.owners]:
            self._flush(shape)

    def _flush(self, shape: tuple) -> None:
        self._ready(self._open.pop(shape))


class Bucket:
    """A batch in the making: runs of rows, kept as the views they came as."""

    def __init__(self) -> None:
        self.rows = 0
        self._positions: list[np.ndarray] = []
        self._images: list[np.ndarray] = []
        self.owners: dict[object, tuple[int, int]] = {}  # each owner's rows in the batch: [start, stop)

    def add(self, positions: np.ndarray, images: np.ndarray, owner: object = None) -> None:
        self._positions.append(positions)
        self._images.append(images)
        start, stop = self.owners.get(owner, (self.rows, self.rows))
        assert stop == self.rows, "an owner's rows in a batch come one after another"
        self.rows += len(positions)
        self.owners[owner] = (start, self.rows)

    def joined(self) -> tuple[np.ndarray, np.ndarray]:
        """The batch's positions and its uint8 NHWC images: a block's rows as they are
        where the batch lies in one block, else joined into one array."""
        if len(self._images) == 1:
            return self._positions[0], self._images[0]
        return np.concatenate(self._positions), np.concatenate(self._images)


def gather_layer(parts: list[np.ndarray], order: np.ndarray, width: int, to_float16: Float16Cast,
                 block_bytes: int = CAST_BLOCK_BYTES) -> list[np.ndarray]:
    """One layer's rows as float16 blocks, in ``order`` (the shard's image order), from its
    batches' float32 outputs. Where the batches are in that order already, consecutive
    batches are cast together in blocks of about ``block_bytes`` of float32 (always whole
    batches; :func:`features.schema.table_of` encodes the blocks as they are); else they are
    concatenated, cast and put in order as one block."""
    if not parts:
        return [np.zeros((0, width), FEATURE_DTYPE)]
    if not _is_identity(order):
        return [to_float16(np.concatenate(parts))[order]]
    return [to_float16(group[0] if len(group) == 1 else np.concatenate(group))
            for group in _groups(parts, block_bytes)]


def _groups(parts: list[np.ndarray], block_bytes: int) -> Iterator[list[np.ndarray]]:
    group: list[np.ndarray] = []
    size = 0
    for part in parts:
        if group and size + part.nbytes > block_bytes:
            yield group
            group, size = [], 0
        group.append(part)
        size += part.nbytes
    yield group


def _is_identity(order: np.ndarray) -> bool:
    return bool(len(order) == 0 or (order[0] == 0 and np.all(np.diff(order) == 1)))


def gather_shard(parts: list[dict[str, np.ndarray]], positions: list[np.ndarray],
                 widths: dict[str, int], to_float16: Float16Cast) -> dict[str, list[np.ndarray]]:
    """Each layer's float16 blocks (:func:`gather_layer`) from a shard's batches (``parts``,
    whose rows are at ``positions`` in the shard), rows in position order."""
    order = row_order(positions)
    return {layer: gather_layer([part[layer] for part in parts], order, width, to_float16)
            for layer, width in widths.items()}


def row_order(positions: list[np.ndarray]) -> np.ndarray:
    return np.argsort(np.concatenate(positions), kind="stable") if positions else np.zeros(0, int)


class Inference:
    """The session on threads of its own (``session.concurrency``: one per set of bound
    buffers, or per session side by side on the CPU): :meth:`submit` hands it a batch (one array per view) and returns a future of
    ``({view: {layer: float32}}, seconds)``; it blocks while a batch per thread and
    ``ready`` more wait, so host memory stays bounded."""

    def __init__(self, session: TapSession, ready: int = READY) -> None:
        self.session = session
        threads = getattr(session, "concurrency", 1)  # a stand-in session (the host-only bench) runs on one
        self._thread = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tlfs-infer")
        self._slots = threading.BoundedSemaphore(threads + ready)

    def submit(self, batches: dict[str, np.ndarray]) -> Future:
        self._slots.acquire()
        try:
            future = self._thread.submit(self._run, batches)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _run(self, batches: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, np.ndarray]], float]:
        started = time.perf_counter()
        outputs = {view: self.session.run(batch) for view, batch in batches.items()}
        return outputs, time.perf_counter() - started

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Inference":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class BatchRows:
    """Rows ``start:stop`` of a batch's outputs (a future of ``({view: {layer: float32}}, seconds)``):
    one shard's share of a batch that may hold the end of one shard and the start of the next."""

    future: Future
    start: int
    stop: int
    rows: int  # the batch's

    def outputs(self) -> tuple[dict[str, dict[str, np.ndarray]], float]:
        """This share's outputs (views of the batch's rows, no copy) and of its seconds."""
        views, seconds = self.future.result()
        if self.stop - self.start == self.rows:
            return views, seconds
        share = {view: {layer: rows[self.start:self.stop] for layer, rows in layers.items()}
                 for view, layers in views.items()}
        return share, seconds * (self.stop - self.start) / self.rows


@dataclass(eq=False)  # one shard's, as itself (a batch's owners are looked up by identity)
class ShardOutputs:
    """One shard on its way to the writer: its entries, its rejects, and each of its batches'
    rows (:class:`BatchRows`) with their positions in the shard."""

    number: int
    entries: list[Entry]
    rejects: list[Reject]
    started: float
    positions: list[np.ndarray] = field(default_factory=list)
    batches: list[BatchRows] = field(default_factory=list)
    assemble_seconds: float = 0.0
    _order: np.ndarray | None = field(default=None, repr=False)
    _kept: list[Entry] | None = field(default=None, repr=False)
    _columns: tuple | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def order(self) -> np.ndarray:
        """The batches' rows in the shard's image order (computed once, read by every file)."""
        with self._lock:
            if self._order is None:
                self._order = row_order(self.positions)
                rows = np.concatenate(self.positions)[self._order] if self.positions else []
                self._kept = [self.entries[i] for i in rows]
            return self._order

    def kept(self) -> list[Entry]:
        """The entries that have features, in the shard's order."""
        self.order()
        return self._kept

    def columns(self, label_of: Callable[[str], int]) -> tuple:
        """The id, label and label-name columns of its files, built once for all its layers
        (Python work that holds the GIL, so not once per writer thread)."""
        kept = self.kept()
        with self._lock:
            if self._columns is None:
                self._columns = row_columns([e.image_id for e in kept], [label_of(e.label_name) for e in kept],
                                            [e.label_name for e in kept])
            return self._columns

    def outputs(self) -> list[tuple[dict[str, dict[str, np.ndarray]], float]]:
        """Each batch's outputs (its rows of this shard) and seconds, waiting for them."""
        return [batch.outputs() for batch in self.batches]


def shard_blocks(blocks: Iterator[DecodedBlock], images: int) -> Iterator[DecodedBlock]:
    """The next blocks of ``blocks`` (a run's decoded stream, which never puts two shards'
    entries in one block), up to those of the next ``images`` entries: one shard's."""
    taken = 0
    while taken < images:
        block = next(blocks, None)
        if block is None:
            raise PipelineError(f"the decoded stream ended {images - taken} images before its shard's end")
        taken += len(block)
        yield block
    if taken != images:
        raise PipelineError(f"a decoded block ran {taken - images} images past its shard's end")


class ShardBatches:
    """A run's shards, one after another, in batches for ``inference``. A batch may hold the
    end of one shard and the start of the next: on CUDA a short batch costs a whole one (the
    fixed-shape graph pads it), so a shard of 2,500 images in batches of 256 would waste 2.3 %
    of the device's time on its last batch (docs/benchmarks.md: the host side feeding a
    stand-in device). A shard goes to ``ready`` (the writer) once all its rows are in batches
    handed to the session, in shard order. Shards before the one being filled wait in
    part-filled batches only while they hold at most a batch of images in all (shards smaller
    than a batch share one; a rarer image size's batch holding a large shard goes once the
    next shard's images are in), so host memory stays bounded."""

    def __init__(self, p: Plan, inference: Inference, ready: Callable[[ShardOutputs], None],
                 progress: Callable[[int], None] | None = None) -> None:
        self.p, self.inference, self.ready, self.progress = p, inference, ready, progress
        self._batcher = Batcher(p.runtime.batch_size, self._submit)
        self._waiting: list[ShardOutputs] = []  # in shard order, the last maybe still being filled
        self._filling: ShardOutputs | None = None

    def add(self, number: int, blocks: Iterator[DecodedBlock]) -> None:
        """Shard ``number``'s images, the next ones of ``blocks`` (:meth:`Decoder.blocks`'s
        stream, which may run on through the next shards), into batches."""
        p, progress = self.p, self.progress
        entries = p.shard_entries(number)
        out = self._filling = ShardOutputs(number, entries, [], time.perf_counter())
        self._waiting.append(out)
        position = 0  # of the block's first entry in the shard
        for block in shard_blocks(blocks, len(entries)):
            assert all(map(operator.is_, block.entries, entries[position:position + len(block)])), \
                "the decoded stream must follow the shard's entries"
            decoded = block.decoded
            if decoded.any_rejected:  # its rejects, in order
                for entry, reason in zip(block.entries, decoded.reasons):
                    if reason is not None:
                        out.rejects.append(Reject(entry.image_id, p.sources[entry.source].uri, reason))
                        if progress:
                            progress(1)
            kept = decoded.kept() + position
            if decoded.one_shape:
                self._batcher.add(kept, decoded.images, out)
            else:  # images of several sizes: each on its own, to its shape's batch
                for at, image in zip(kept, decoded.images):
                    self._batcher.add(np.array([at]), image[np.newaxis], out)
            position += len(block)
        self._filling = None
        self._hand_on()
        # the shards before this one wait in part-filled batches (a rarer image size, or shards smaller than a
        # batch): while they hold more than a batch of images, the oldest one's batches go however full
        while len(self._waiting) > 1 and sum(len(w.entries) for w in self._waiting[:-1]) > self.p.runtime.batch_size:
            self._batcher.flush_holding(self._waiting[0])
            self._hand_on()

    def finish(self) -> None:
        """The last batches, however full; every shard to ``ready``."""
        self._batcher.flush_all()
        self._hand_on()

    def _submit(self, bucket: Bucket) -> None:
        assembling = time.perf_counter()
        positions, images = bucket.joined()
        batches = {view: VIEWS[view](images) for view in self.p.views}
        assembled = time.perf_counter() - assembling
        future = self.inference.submit(batches)
        if self.progress:
            future.add_done_callback(lambda _, n=len(positions): self.progress(n))
        for out, (start, stop) in bucket.owners.items():
            out.positions.append(positions[start:stop])
            out.batches.append(BatchRows(future, start, stop, len(positions)))
            out.assemble_seconds += assembled * (stop - start) / len(positions)
        self._hand_on()

    def _hand_on(self) -> None:
        """The waiting shards whose rows are all in batches handed to the session, in order."""
        while self._waiting and self._waiting[0] is not self._filling and not self._batcher.holds(self._waiting[0]):
            self.ready(self._waiting.pop(0))
