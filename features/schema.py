"""The row schema of a shard and its Parquet encoding.

Features are ``fixed_size_list<float16>[d]``: pandas reads them as one float16 array
per row, and :func:`features_matrix` turns a column into a 2-D array without any
per-row Python object. Writer options measured on a 2-core machine (10,000 rows x
1280 dims, fp16): pyarrow's defaults 0.03 GB/s; no dictionary and no statistics on
the feature column with LZ4 0.12 GB/s (the default; the ``codec`` setting chooses another,
features/codecs.py); fixed_size_binary 1 GB/s, rejected
because pandas would show opaque bytes. Data pages of 64 KB, not Parquet's 1 MB: the
encoder's page buffers then stay in a core's own cache, so two writer threads stop
crowding each other out of the shared one (docs/benchmarks.md: Parquet data pages); the
files are 0.2-0.3 % larger and read as fast.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tlfs.features.codecs import BYTES_PER_VALUE, CODEC_OPTIONS, CODECS, DEFAULT_CODEC

FEATURE_DTYPE = np.float16


def shard_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("label", pa.int16(), nullable=False),
            pa.field("label_name", pa.string(), nullable=False),
            pa.field("features", pa.list_(pa.float16(), dim), nullable=False),
        ]
    )


WRITE_OPTIONS = dict(
    use_dictionary=["label_name"],
    write_statistics=["image_id", "label"],
    compression="lz4",
    data_page_size=1 << 16,  # bytes, before compression
)


def write_options(codec: str = DEFAULT_CODEC) -> dict:
    """pyarrow.parquet.write_table's options for a shard file in ``codec`` (features/codecs.py);
    lz4's are :data:`WRITE_OPTIONS`."""
    if codec not in CODEC_OPTIONS:
        raise ValueError(f"unknown Parquet codec {codec!r}: one of {', '.join(CODECS)}")
    return {**WRITE_OPTIONS, **CODEC_OPTIONS[codec]}


ROW_ID_BYTES = 16  # an image's id, label and label name in a file, about, once encoded (ids compress well)


def estimated_bytes(rows: int, widths, codec: str = DEFAULT_CODEC) -> int:
    """About what ``rows`` rows take in the files of layers of ``widths`` in ``codec``, on the
    large side: each feature value at most :data:`BYTES_PER_VALUE`, and each row's id in each file
    (docs/benchmarks.md: Parquet codecs)."""
    return sum(int(rows * (BYTES_PER_VALUE[codec] * width + ROW_ID_BYTES)) for width in widths)


def row_columns(image_ids, labels, label_names) -> tuple[pa.Array, pa.Array, pa.Array]:
    """A shard's id, label and label-name columns (built once, shared by its layers' files)."""
    return (pa.array(image_ids, type=pa.string()), pa.array(np.asarray(labels, dtype=np.int16), type=pa.int16()),
            pa.array(label_names, type=pa.string()))


def shard_table(image_ids: list[str], labels: np.ndarray, label_names: list[str],
                features: np.ndarray | list[np.ndarray]) -> pa.Table:
    return table_of(row_columns(image_ids, labels, label_names), features)


def table_of(columns: tuple[pa.Array, pa.Array, pa.Array], features: np.ndarray | list[np.ndarray]) -> pa.Table:
    """A shard file's table from its :func:`row_columns` and one layer's features: a ``[rows, width]``
    matrix, or its blocks of rows in order (a shard's batches, or runs of them). Blocks go to the encoder as the
    column's chunks, never copied into one matrix: the file's bytes are the same, and two writer
    threads' working sets stay small enough to share the caches (docs/benchmarks.md: the writer
    pool's CPU in the host side, 57.8 against 71.7 µs an image)."""
    blocks = [features] if isinstance(features, np.ndarray) else features
    dim = blocks[0].shape[1]
    chunks = [pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(block, dtype=FEATURE_DTYPE).reshape(-1), type=pa.float16()), dim) for block in blocks]
    return pa.Table.from_arrays([*columns, pa.chunked_array(chunks)], schema=shard_schema(dim))


def read_parquet(source, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (a path, a file object or a buffer) as a table, decoded on the
    calling thread. Arrow's thread pool read it no faster here (a shard is one row group of
    a few columns) and, still busy at interpreter exit, aborted a process that had finished
    its work ("terminate called without an active exception", exit status 134) in about one
    run in four that read features and exited at once (apache/arrow#34314)."""
    import pyarrow.parquet as pq

    return pq.read_table(source, columns=columns, use_threads=False)


def features_matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """(n, d) array from a fixed_size_list column, without per-row objects."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = array.type.list_size
    flat = array.values.to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), dim).astype(dtype, copy=False)
