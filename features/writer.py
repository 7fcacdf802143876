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

from tlfs.features import direct_io
from tlfs.features.codecs import DEFAULT_CODEC
from tlfs.features.schema import write_options
from tlfs.features.storage import atomic_write_bytes, sha256_bytes


ROOM_FOR_FOOTER = 64 << 10  # bytes: the schema, a row group's column metadata and the ids' statistics


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


def encode_shard(table: pa.Table, codec: str = DEFAULT_CODEC) -> EncodedShard:
    """The shard file of ``table`` in ``codec`` (features/codecs.py)."""
    # Arrow buffers, not io.BytesIO: the encoder's every write to a Python file object
    # takes the GIL, which kept two writer threads from encoding at once
    pool, options = encoder_pool(), write_options(codec)
    data = _encoded_in_place(table, pool, options)
    if data is None:  # the file outgrew its room (not seen on features): a buffer that grows
        sink = pa.BufferOutputStream(memory_pool=pool)
        pq.write_table(table, sink, memory_pool=pool, **options)
        data = sink.getvalue()
    return EncodedShard(data, table.num_rows, sha256_bytes(data))  # hashed and written from Arrow's buffer


def _encoded_in_place(table: pa.Table, pool: pa.MemoryPool, options: dict) -> pa.Buffer | None:
    """The file encoded straight into a buffer aligned for direct I/O (features/direct_io.py),
    so that it is written from there without a copy, with room for the table's bytes, compression
    that does not pay (LZ4 grows random bytes by well under 1 %), page headers and the footer;
    None where the file outgrew that room."""
    room = direct_io.aligned_buffer(table.nbytes + table.nbytes // 16 + ROOM_FOR_FOOTER, pool)
    sink = pa.FixedSizeBufferWriter(room)
    try:
        pq.write_table(table, sink, memory_pool=pool, **options)
    except OSError as exc:
        if "out of bounds" in str(exc):  # Arrow's FixedSizeBufferWriter: "Write out of bounds (offset = ...)"
            return None
        raise
    return room.slice(0, sink.tell())


def put_shard(uri: str, encoded: EncodedShard) -> WrittenShard:
    atomic_write_bytes(uri, encoded.data)
    return WrittenShard(uri=uri, rows=encoded.rows, bytes=encoded.bytes, sha256=encoded.sha256)


def write_shard(uri: str, table: pa.Table, codec: str = DEFAULT_CODEC) -> WrittenShard:
    return put_shard(uri, encode_shard(table, codec))
