"""Reading and decoding a shard's images, so that the session is never idle waiting.

Sources are read in order on a background thread (archives stream sequentially) and cut
into chunks (:func:`cut_chunks`). A chunk is decoded either on that same thread
(``workers == 1``) or in a pool of worker processes (``workers > 1``), results taken back
in order. A chunk comes back as one :class:`DecodedBlock` (where its images share a shape,
one array), which is what the batcher takes: nothing in the run's process handles the
images one by one (its threads share one GIL, which per-image Python work would make the
host side's ceiling on many cores). Both paths are bounded (blocks, or chunks in flight),
so host memory stays flat whatever the dataset's size. One :class:`Decoder` (and its
pool) serves every shard of a run.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from operator import itemgetter
from typing import Callable, Iterable, Iterator

import numpy as np

from tlfs.models.runtime import available_cores, host_share
from tlfs.pipeline.dataset_index import Entry, SourceInfo
from tlfs.pipeline.indexing import iter_payloads
from tlfs.pipeline.sources import OpenArchives
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import FULL_DEPTH, ImageRejected, decode

# A task sent to a worker process holds images until it has CHUNK_IMAGES of them or their
# payloads reach CHUNK_BYTES. Handing a chunk over costs the run's process (one thread
# at a time: the GIL) per chunk as well as per image: decoding CIFAR-10 with 2 workers,
# that process spent 17-28 µs of CPU an image (its reading included) with chunks of 32,
# 11-13 µs with chunks of 128-512 (2026-12-04). A photo's payload is 100 KB or more, so
# a chunk of photos stays a few dozen images.
CHUNK_IMAGES = 256
CHUNK_BYTES = 4 << 20
READ_AHEAD = 2  # decoded blocks a decoder without worker processes holds ahead of the batcher
# A bound for a worker that never comes up (its interpreter and imports take about a
# second, several on a loaded machine), not a speed target.
WORKER_START_SECONDS = 300


@dataclass
class DecodeStats:
    """Where a run's host time went: seconds waiting on the sources (reading) and seconds
    of decoding (summed over the workers: CPU time, not wall time)."""

    images: int = 0
    read_seconds: float = 0.0
    decode_seconds: float = 0.0

    def since(self, earlier: "DecodeStats") -> "DecodeStats":
        """What was added since ``earlier`` (a copy taken then): one run's share of a decoder
        that served others before it (a benchmark's, a notebook's)."""
        return DecodeStats(self.images - earlier.images, self.read_seconds - earlier.read_seconds,
                           self.decode_seconds - earlier.decode_seconds)


def default_workers(device: str = "cuda") -> int:
    """One decode process per core where inference runs on a GPU; where it runs on the CPU
    a quarter of the cores (models/runtime.host_share; one: the reading thread, no processes)."""
    return host_share(available_cores(), device)


class Decoder:
    """Decodes payloads into pixels with ``workers`` processes (0: the default for the
    ``device`` inference runs on, see :func:`default_workers`; 1: on the reading thread,
    no processes). Use as a context manager: the pool lives as long as the run."""

    def __init__(self, workers: int = 0, device: str = "cuda") -> None:
        if workers < 0:
            raise PipelineError(f"decode workers must be 0 (the default) or more, not {workers}")
        self.workers = workers or default_workers(device)
        self.stats = DecodeStats()
        self._pool: ProcessPoolExecutor | None = None
        self._archives = OpenArchives()  # compressed archives kept open from shard to shard

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc) -> None:
        self._archives.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def start(self) -> "Decoder":
        """Start the worker processes now (a benchmark's warm-up), not at the first image."""
        if self.workers > 1:
            self._executor()
        return self

    def submit(self, fn, *args) -> Future:
        """``fn(*args)`` in one of the worker processes (``workers`` > 1): the stage bench
        times the hand-over with it."""
        return self._executor().submit(fn, *args)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork of a process that runs onnxruntime and lease threads can deadlock
            context = multiprocessing.get_context("spawn")
            started = context.Semaphore(0)  # released by each worker once it is set up
            pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                       initializer=_worker_setup, initargs=(os.getpid(), started))
            try:
                with _main_script_hidden(), _sigint_blocked():
                    # a submit while no worker is idle starts one: every worker now, not at a later submit
                    probes = [pool.submit(_ready) for _ in range(self.workers)]
                _await_workers(started, self.workers, probes)
            except BaseException as exc:
                # a Ctrl-C: wait for the workers, which finish starting and exit (left behind, they
                # would find the run's semaphores gone and print a traceback); one that never came up: don't
                pool.shutdown(wait=not isinstance(exc, PipelineError), cancel_futures=True)
                raise
            self._pool = pool
        return self._pool

    def decoded(self, sources: list[SourceInfo], entries: list[Entry], input_size: int, cache_dir: str | None,
                bit_depth: int = FULL_DEPTH) -> Iterator[tuple[int, Entry, np.ndarray | None, str | None]]:
        """``(position, entry, pixels, None)`` or ``(position, entry, None, reason)`` for
        every entry, in order (image by image: for a caller that keeps every image, as
        fine-tuning does; the extraction takes :meth:`blocks`)."""
        for block in self.blocks(sources, [entries], input_size, cache_dir, bit_depth):
            yield from block.items()

    def blocks(self, sources: list[SourceInfo], parts: list[list[Entry]], input_size: int,
               cache_dir: str | None, bit_depth: int = FULL_DEPTH) -> Iterator["DecodedBlock"]:
        """Several lists of entries (a run's shards) read one after the other without a
        pause, as one stream of :class:`DecodedBlock` in order, positions counted through
        all of them; a block never holds entries of two parts. ``bit_depth``: the bits
        greyscale 16-bit samples hold (pipeline/image_decode.py)."""
        # decode_chunk's arguments after the payloads: (input size, bit depth)
        if self.workers == 1:
            return self._on_reader_thread(sources, parts, (input_size, bit_depth), cache_dir)
        return self._in_processes(sources, parts, (input_size, bit_depth), cache_dir)

    def _chunks(self, sources: list[SourceInfo], parts: list[list[Entry]],
                cache_dir: str | None) -> Iterator[tuple[int, list[Entry], list]]:
        """``(start, entries, payloads)``: each part's payloads in :func:`cut_chunks`'s
        chunks, ``start`` the position of the chunk's first entry in the stream."""
        start = 0
        for entries in parts:
            chunks = cut_chunks(iter_payloads(sources, entries, cache_dir, self._archives), payload_of=itemgetter(1))
            while True:
                started = time.perf_counter()  # timed by the chunk: the reading thread's own work, and its waits
                chunk = next(chunks, None)
                self.stats.read_seconds += time.perf_counter() - started
                if chunk is None:
                    break
                entries_of, payloads = zip(*chunk)
                yield start, list(entries_of), list(payloads)
                start += len(chunk)

    def _on_reader_thread(self, sources, parts, decoding: tuple[int, int], cache_dir) -> Iterator["DecodedBlock"]:
        def produce(put) -> None:
            for start, entries, payloads in self._chunks(sources, parts, cache_dir):
                decoded, seconds = decode_chunk(payloads, *decoding)
                self.stats.decode_seconds += seconds
                self.stats.images += len(decoded)
                put(DecodedBlock(start, entries, decoded))

        return _background(produce, READ_AHEAD)

    def _in_processes(self, sources, parts, decoding: tuple[int, int], cache_dir) -> Iterator["DecodedBlock"]:
        pool = self._executor()

        def produce(put) -> None:
            for start, entries, payloads in self._chunks(sources, parts, cache_dir):
                put((start, entries, pool.submit(decode_chunk, payloads, *decoding)))

        for start, entries, future in _background(produce, chunks_in_flight(self.workers)):
            try:
                decoded, seconds = future.result()
            except BrokenProcessPool as exc:
                raise PipelineError(f"a decode worker process died ({exc}); run the extraction again") from exc
            self.stats.decode_seconds += seconds
            self.stats.images += len(decoded)
            yield DecodedBlock(start, entries, decoded)


def payload_bytes(payload) -> int:
    """What a payload weighs in a chunk: its bytes (a CIFAR image's pixels, an encoded file); 0 for a reason."""
    if isinstance(payload, np.ndarray):
        return payload.nbytes
    return len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0


def cut_chunks(items: Iterable, payload_of: Callable = lambda item: item) -> Iterator[list]:
    """``items`` (each holding the payload ``payload_of(item)``) in the chunks the pool
    sends its workers: :data:`CHUNK_IMAGES` images, or fewer once their payloads hold
    :data:`CHUNK_BYTES`; each chunk as soon as it is full (``items`` may be a stream)."""
    chunk, held = [], 0
    for item in items:
        chunk.append(item)
        payload = payload_of(item)
        held += len(payload) if type(payload) is bytes else payload_bytes(payload)  # bytes: most payloads, at once
        if len(chunk) >= CHUNK_IMAGES or held >= CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def chunks_in_flight(workers: int) -> int:
    """Chunks submitted to the decode workers ahead of the one awaited: two per worker, so
    that none waits between chunks, and two more for the reader's hand-over."""
    return 2 * workers + 2


def _background(produce, depth: int) -> Iterator:
    """Run ``produce(put)`` on a thread; yield what it puts, through a queue of ``depth``."""
    out: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            produce(out.put)
        except BaseException as exc:  # noqa: BLE001 - surfaced in the consumer
            out.put(exc)
        out.put(done)

    thread = threading.Thread(target=work, daemon=True, name="tlfs-read")
    thread.start()
    while (item := out.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


@contextlib.contextmanager
def _main_script_hidden():
    """A spawned process runs the parent's main script again (as ``__mp_main__``) before
    it can unpickle its work, unless the parent was started with ``python -m``. Where that
    script is ``airflow`` (a task process) or any other program, it must not: while the
    workers start, the script's path is hidden, and they import only this module."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not hasattr(main, "__file__"):
        yield
        return
    path = main.__file__
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT held back from this thread while it starts worker processes: a process
    inherits the mask, so a worker is deaf to Ctrl-C from its first instruction, while it
    imports, until :func:`_worker_setup` ignores SIGINT for good (as the standard
    library starts its resource tracker). Another thread, or this one afterwards, takes
    a Ctrl-C that comes meanwhile."""
    if not hasattr(signal, "pthread_sigmask"):  # no POSIX signal masks (Windows)
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _await_workers(started, workers: int, probes: list[Future]) -> None:
    """Wait until each of the ``workers`` processes is set up (``started`` released once
    by each). The ``probes`` (one task a worker) surface a worker that died starting; an
    idle worker may run several of them, so their answers alone do not say every worker
    is up."""
    deadline = time.monotonic() + WORKER_START_SECONDS
    while workers:
        if started.acquire(timeout=0.5):  # short waits: Ctrl-C is seen between them
            workers -= 1
            continue
        for probe in probes:
            if probe.done() and probe.exception() is not None:
                raise PipelineError(f"a decode worker process failed to start ({probe.exception()})")
        if time.monotonic() > deadline:
            raise PipelineError(f"{workers} decode worker process(es) had not started after "
                                f"{WORKER_START_SECONDS} s")


def _ready() -> int:
    return os.getpid()


def _worker_setup(parent: int, started) -> None:
    """In a worker process: leave Ctrl-C to the run, which stops the pool (a terminal sends
    SIGINT to every process of the group: each worker would print a traceback of its wait on
    the queue; SIGINT is held back from the worker's start, :func:`_sigint_blocked`), exit as
    soon as the run that started it is gone (a SIGKILLed run would otherwise leave its idle
    workers behind, blocked on their queue), and say it is ready (``started``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C held back since the start is dropped
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="tlfs-parent-watch").start()
    started.release()


def _decode_one(payload, input_size: int, bit_depth: int = FULL_DEPTH) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode(payload, input_size, bit_depth), None
    except ImageRejected as exc:
        return None, str(exc)


def decode_chunk(payloads: list, input_size: int, bit_depth: int = FULL_DEPTH) -> tuple["Decoded", float]:
    """In a worker process (or on the reading thread): each payload's pixels or reason
    (:class:`Decoded`), and the CPU seconds the decoding took. CPU time, not wall time: a worker
    that shares its core with the run's other threads is preempted, and the wall time then
    counts their work as decoding's (CIFAR-10 on 2 cores: 78 µs an image of wall time
    against 48 of CPU, docs/benchmarks.md)."""
    started = time.thread_time()
    results = [_decode_one(payload, input_size, bit_depth) for payload in payloads]
    return Decoded.of(results), time.thread_time() - started


class Decoded:
    """A chunk's decoded images (or reasons), as they travel back from a worker: where
    every image has one shape (CIFAR's 32x32, photos resized to the input size), as one
    array, which pickles and unpickles at once, not image by image (1.7 µs an image to
    unpickle 256 small arrays, 0.14 µs as one, and 5.4 µs against about 1 to pickle
    them); iterating gives ``(image, reason)`` per payload, an image a view of that array."""

    def __init__(self, images: np.ndarray | list, reasons: list[str | None]) -> None:
        self.images, self.reasons = images, reasons  # images: one row per None reason, in order

    @classmethod
    def of(cls, results: list[tuple[np.ndarray | None, str | None]]) -> "Decoded":
        images = [image for image, _ in results if image is not None]
        if images and len({(image.shape, image.dtype) for image in images}) == 1:
            images = np.stack(images)
        return cls(images, [reason for _, reason in results])

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, str | None]]:
        images = iter(self.images)
        for reason in self.reasons:
            yield (next(images), None) if reason is None else (None, reason)

    def __len__(self) -> int:
        return len(self.reasons)

    @property
    def any_rejected(self) -> bool:
        """Whether a payload has a reason instead of an image."""
        return self.reasons.count(None) != len(self.reasons)

    @property
    def one_shape(self) -> bool:
        """Whether the images are one array (they share a shape; none may be there)."""
        return isinstance(self.images, np.ndarray)

    def kept(self) -> np.ndarray:
        """The indices of the payloads that have an image (row ``i`` of :attr:`images` is
        payload ``kept()[i]``'s)."""
        if not self.any_rejected:  # the common case
            return np.arange(len(self.reasons))
        return np.array([i for i, reason in enumerate(self.reasons) if reason is None], dtype=np.int64)


@dataclass(frozen=True)
class DecodedBlock:
    """A chunk's entries (at positions ``start``, ``start + 1``, ... of the stream) and
    their :class:`Decoded` images or reasons."""

    start: int
    entries: list[Entry]
    decoded: Decoded

    def __len__(self) -> int:
        return len(self.entries)

    def items(self) -> Iterator[tuple[int, Entry, np.ndarray | None, str | None]]:
        """``(position, entry, image, reason)`` one by one."""
        for position, entry, (image, reason) in zip(itertools.count(self.start), self.entries, self.decoded):
            yield position, entry, image, reason


def blank_chunk(payloads: list, shapes: list) -> tuple[Decoded, float]:
    """In a worker process: :func:`decode_chunk`'s answer without decoding (blank images
    of the decoded ``shapes``; None: a reject), so that the stage bench times the
    hand-over alone."""
    return Decoded.of([(None, "rejected") if shape is None else (np.zeros(shape, np.uint8), None)
                       for shape in shapes]), 0.0
