"""Writing shards: a pool of threads, each taking one file (a layer of a view of a
shard: its batches gathered in image order as float16, encoded to Parquet in memory,
hashed, written atomically into the plan's staging; a shard's widest layers first), and
one thread that saves each shard's record once its files are written. pyarrow, hashlib
and file I/O release the GIL, so the files of several layers and shards are encoded at
once. At most ``threads + 1`` shards are in flight (their outputs held in memory), so
host memory stays flat however long the run."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable

from tlfs.features import layout
from tlfs.features.leases import translate_missing
from tlfs.features.schema import table_of
from tlfs.features.writer import encode_shard, put_shard
from tlfs.models.runtime import host_share
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.float16_cast import Float16Cast
from tlfs.pipeline.inference import ShardOutputs, gather_layer
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.records import ShardFile, ShardRecord, file_key
from tlfs.pipeline.staging import save_record

MAX_WRITER_THREADS = 8  # beyond this the encoder outruns any device we have measured


def writer_threads(cores: int, device: str = "cuda") -> int:
    """Threads encoding and writing files: the host side's share of ``cores``
    (models/runtime.host_share: a quarter where inference runs on the CPU, as decoding), up to
    :data:`MAX_WRITER_THREADS`. On the CPU one thread writes far faster than the session infers;
    more only contend with it for the cores (docs/benchmarks.md: the writer pool's threads where
    the session runs on the CPU)."""
    return min(host_share(cores, device), MAX_WRITER_THREADS)


WRITER_NICE = 10  # how far below the run's other threads and the decode workers the writer threads run, where they yield


def writers_yield(decode_workers: int, cores: int, device: str = "cuda") -> bool:
    """Whether the writer threads run below decoding's priority (:data:`WRITER_NICE`): beside
    a GPU, where the decode workers leave cores free. There decoding bounds the host side and the
    writers have time to spare, but a shard's files come in at once, and the writer threads
    would take the workers' cores while cores stand idle between shards (one worker on 2 cores:
    the host side 0.84-0.92x of decoding alone, 0.93-0.95x with the writers below it). Where the
    workers take every core a writer held back lets the shards pile up to the pool's bound, and
    the cores idle while it catches up; on the CPU the sessions take the cores, and the writers
    must not wait behind them (docs/benchmarks.md: the host side with a core to spare)."""
    return device != "cpu" and decode_workers < cores


def _below_decoding() -> None:
    """In a writer thread: lower its own scheduling priority by :data:`WRITER_NICE`."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere setpriority takes a process, and would lower the whole run
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + WRITER_NICE))
    except OSError:  # a scheduler that refuses it: the thread runs as it is
        pass


def widest_first(views: tuple[str, ...], layer_dims: dict[str, int]) -> list[tuple[str, str, int]]:
    """A shard's files as ``(view, layer, width)``, widest layer first (ties in view and tap
    order). A file's cost grows with its layer's width, and one layer can be most of a shard
    (Lite0's head: 1,280 of 2,048 values an image); started first, it no longer runs alone at
    the end of a shard while the other threads have nothing left (longest job first)."""
    files = [(view, layer, width) for view in views for layer, width in layer_dims.items()]
    return sorted(files, key=lambda file: -file[2])


def write_file(p: Plan, out: ShardOutputs, view: str, layer: str, width: int,
               to_float16: Float16Cast) -> tuple[ShardFile, float]:
    """One layer of one view of a shard, gathered, encoded and written into staging; and the
    seconds that took once the shard's batches were in (the thread's work, not its wait for them)."""
    outputs = out.outputs()  # waits for the shard's batches
    working = time.perf_counter()
    blocks = gather_layer([batch[view][layer] for batch, _ in outputs], out.order(), width, to_float16)
    table = table_of(out.columns(p.label_of), blocks)
    relative = layout.shard_path(layer, p.shards[out.number].split, p.plan_id, out.number, view)
    with translate_missing(p.set_uri, p.plan_id):
        # into the plan's staging: the commit moves it into the layer= folder (features/versions.py)
        written = put_shard(layout.staged_uri(p.set_uri, p.plan_id, relative), encode_shard(table, p.codec))
    return ShardFile(relative, written.rows, written.bytes, written.sha256, layer, view), time.perf_counter() - working


class NotTried(Exception):
    """A file not written since another file's write had failed."""


class ShardWriter:
    """``submit(outputs)`` -> the future of the shard's :class:`ShardRecord`."""

    def __init__(self, p: Plan, threads: int, below_decoding: bool = False) -> None:
        self.p = p
        self.threads = threads
        self._files = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tlfs-write",
                                         initializer=_below_decoding if below_decoding else None)
        # one writer: each shard's files, then its record, on one thread, in shard order
        # (what the crash tests replay); more: records on a thread of their own
        self._records = self._files if threads == 1 else ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlfs-record")
        self._in_flight: list[Future] = []
        self._to_float16 = Float16Cast()  # shared by the pool's threads
        self._failed = threading.Event()  # a file's write failed: the files behind it are not tried

    def submit(self, out: ShardOutputs, done: Callable[[ShardRecord], None] = lambda _: None) -> Future:
        """Queue shard ``out`` for writing, first waiting (for the oldest shard) while
        ``threads + 1`` are in flight."""
        while len(self._in_flight) > self.threads:
            self._in_flight.pop(0).result()
        started = {(view, layer): self._files.submit(self._write_unless_failed, out, view, layer, width)
                   for view, layer, width in widest_first(self.p.views, self.p.layer_dims)}
        files = {file_key(layer, view): started[view, layer] for view in self.p.views for layer in self.p.layer_dims}
        future = self._records.submit(self._record, out, files, done)
        self._in_flight.append(future)
        return future

    def _write_unless_failed(self, out: ShardOutputs, view: str, layer: str, width: int) -> tuple[ShardFile, float]:
        """A file that failed to be written fails the run: the files queued behind it are not
        tried (on a failing store each would go through its retries first). The thread that
        failed says so before it takes another file, so none slips through."""
        if self._failed.is_set():
            raise NotTried
        try:
            return write_file(self.p, out, view, layer, width, self._to_float16)
        except BaseException:
            self._failed.set()
            raise

    def _record(self, out: ShardOutputs, files: dict[str, Future],
                done: Callable[[ShardRecord], None]) -> ShardRecord:
        wait(files.values())
        errors = [NotTried() if file.cancelled() else file.exception() for file in files.values()]  # cancelled: by close()
        for error in errors:
            if error is not None and not isinstance(error, NotTried):
                raise error
        if any(errors):
            raise PipelineError(f"shard {out.number}: its files were not written, since another file's write failed")
        written = {key: future.result()[0] for key, future in files.items()}
        kept = len(out.kept())
        record = ShardRecord(out.number, self.p.shards[out.number].split, len(out.entries), kept, len(out.rejects),
                             tuple(out.rejects), written,
                             seconds=round(time.perf_counter() - out.started, 3),
                             write_seconds=round(sum(future.result()[1] for future in files.values()), 3),
                             infer_seconds=round(out.assemble_seconds + sum(s for _, s in out.outputs()), 3))
        with translate_missing(self.p.set_uri, self.p.plan_id):
            save_record(self.p, record)
        done(record)
        return record

    def close(self, cancel: bool = False) -> None:
        """Wait for the files being written (so that none is written after the run has
        returned); ``cancel``: drop those not started."""
        for pool in {id(self._records): self._records, id(self._files): self._files}.values():
            pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)
