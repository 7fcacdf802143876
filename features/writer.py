"""Writing one shard file of one layer: serialised in memory, then put atomically."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features.schema import WRITE_OPTIONS
from tlfs.features.storage import atomic_write_bytes, sha256_bytes


@dataclass(frozen=True)
class WrittenShard:
    uri: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def write_shard(uri: str, table: pa.Table) -> WrittenShard:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **WRITE_OPTIONS)
    data = buffer.getvalue()
    atomic_write_bytes(uri, data)
    return WrittenShard(uri=uri, rows=table.num_rows, bytes=len(data), sha256=sha256_bytes(data))
