"""Large files written past the page cache (Linux's ``O_DIRECT``), where the filesystem takes it.

Why: a buffered write copies the file into the page cache, and its fsync then has the
writing thread hand those pages to the disk: 0.24-0.72 ms of CPU a MB, against 0.06 ms
written past the cache, where the disk reads the bytes straight from the encoder's buffer.
The writer pool with two threads went from 1.50x of one thread to 1.71x (medians;
docs/benchmarks.md: the shard files written past the page cache).

Direct I/O wants the memory, the file offset and the length aligned to the device's
block. :func:`aligned_buffer` gives memory on a :data:`BLOCK` boundary, so the encoder
writes a shard's file straight into it (features/writer.py); the file's last partial
block is written through the cache. Where direct I/O is not to be had (another OS, a
filesystem that refuses it, a file too small to gain from it), :func:`write_synced` says
so and its caller writes the usual way."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: DAG files parse without pyarrow (tests/dags)
    import pyarrow as pa

BLOCK = 4096  # bytes: a multiple of every Linux block device's logical block, which direct I/O aligns to
MIN_BYTES = 1 << 20  # smaller files (manifests, records) gain nothing worth a second way of writing


def aligned_buffer(size: int, pool: pa.MemoryPool | None = None) -> pa.Buffer:
    """A mutable buffer of ``size`` bytes from ``pool`` that starts on a :data:`BLOCK` boundary."""
    import pyarrow as pa

    raw = pa.allocate_buffer(size + BLOCK, memory_pool=pool)
    skip = -raw.address % BLOCK
    return pa.py_buffer(memoryview(raw)[skip:skip + size])  # holds ``raw`` while it lives


def write_synced(path: str, data) -> bool:
    """Write ``data`` (bytes or any buffer) to a new file at ``path`` past the page cache
    and fsync it. False, with nothing written that counts, where direct I/O is not to be
    had; an error of the disk (full, read-only) is raised as it is."""
    view = memoryview(data).cast("B")
    direct = getattr(os, "O_DIRECT", 0)
    if not direct or len(view) < MIN_BYTES:
        return False
    import pyarrow as pa

    head = len(view) - len(view) % BLOCK
    source = view if pa.py_buffer(view).address % BLOCK == 0 else _aligned_copy(view[:head])
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | direct, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a filesystem without direct I/O (tmpfs before Linux 6.6, some FUSE)
            return False
        raise
    try:
        try:
            _write_all(descriptor, source[:head])
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a device with blocks larger than BLOCK: the caller rewrites it
                return False
            raise
        _leave_direct_io(descriptor)
        _write_all(descriptor, view[head:])  # the last partial block, through the cache
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


def _aligned_copy(view: memoryview) -> memoryview:
    import numpy as np

    copy = aligned_buffer(len(view))
    np.copyto(np.frombuffer(copy, np.uint8), np.frombuffer(view, np.uint8))
    return memoryview(copy)


def _leave_direct_io(descriptor: int) -> None:
    import fcntl

    fcntl.fcntl(descriptor, fcntl.F_SETFL, fcntl.fcntl(descriptor, fcntl.F_GETFL) & ~os.O_DIRECT)


def _write_all(descriptor: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(descriptor, view[done:])
