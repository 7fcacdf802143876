"""Writing one shard file of one layer: encoded in memory (:func:`encode_shard`, whose
size and sha256 are taken from the very bytes that are written, so a commit can trust
them), then put atomically (:func:`put_shard`). Both release the GIL for most of their
time (pyarrow's encoder, hashlib on large buffers, file I/O), so several shards and
layers are written at once by the runner's writer pool."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features.schema import WRITE_OPTIONS
from tlfs.features.storage import atomic_write_bytes, sha256_bytes


@dataclass(frozen=True)
class EncodedShard:
    """A shard file's bytes, with what a manifest says of them."""

    data: bytes | pa.Buffer  # any object with the buffer protocol
    rows: int
    sha256: str

    @property
    def bytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class WrittenShard:
    uri: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def encoder_pool() -> pa.MemoryPool:
    """The memory the encoder takes its pages and the file's bytes from: jemalloc where this
    pyarrow has it, unless the operator chose Arrow's default pool (``ARROW_DEFAULT_MEMORY_POOL``).
    Arrow's default, mimalloc, hands a shard's freed pages back to the system and faults them in
    again, zeroed, for the next shard: with jemalloc the writer threads took 16 % less CPU an
    image (medians; docs/benchmarks.md: the encoder's memory pool). The file's bytes are the same."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool()
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a build without jemalloc (pyarrow's Windows wheels)
        return pa.default_memory_pool()


def encode_shard(table: pa.Table) -> EncodedShard:
    # an Arrow buffer, not io.BytesIO: the encoder's every write to a Python file object
    # takes the GIL, which kept two writer threads from encoding at once
    pool = encoder_pool()
    sink = pa.BufferOutputStream(memory_pool=pool)
    pq.write_table(table, sink, memory_pool=pool, **WRITE_OPTIONS)
    data = sink.getvalue()  # hashed and written from Arrow's buffer, without a copy into Python bytes
    return EncodedShard(data, table.num_rows, sha256_bytes(data))


def put_shard(uri: str, encoded: EncodedShard) -> WrittenShard:
    atomic_write_bytes(uri, encoded.data)
    return WrittenShard(uri=uri, rows=encoded.rows, bytes=encoded.bytes, sha256=encoded.sha256)


def write_shard(uri: str, table: pa.Table) -> WrittenShard:
    return put_shard(uri, encode_shard(table))
