"""A shard file's codec (features/codecs.py): each reads back the same features bit for
bit, and each is what it says it is."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tlfs.features.codecs import CODECS, DEFAULT_CODEC
from tlfs.features.schema import features_matrix, shard_table, write_options

COMPRESSION = {"lz4": "LZ4", "zstd": "ZSTD", "none": "UNCOMPRESSED"}


def a_table(rows: int = 300, width: int = 96) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(0)
    features = np.maximum(rng.standard_normal((rows, width)), 0).astype(np.float16)  # a ReLU's zeros compress
    features[0, :3] = [np.inf, -0.0, np.float16(6.1e-5)]  # bits a codec must keep as they are
    return shard_table([f"train/a/{i}.png" for i in range(rows)], np.arange(rows) % 10, ["a"] * rows, features), features


def encoded(table: pa.Table, codec: str) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options(codec))
    return sink.getvalue()


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_gives_back_the_same_features_bit_for_bit(codec):
    table, features = a_table()
    back = pq.read_table(pa.BufferReader(encoded(table, codec)))
    assert features_matrix(back["features"], np.float16).view(np.uint16).tobytes() == features.view(np.uint16).tobytes()
    assert back["image_id"].to_pylist() == table["image_id"].to_pylist()


@pytest.mark.parametrize("codec", CODECS)
def test_each_codec_compresses_every_column_as_named_and_encodes_the_features_plainly(codec):
    meta = pq.ParquetFile(pa.BufferReader(encoded(a_table()[0], codec))).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {column.compression for column in columns.values()} == {COMPRESSION[codec]}
    assert set(columns["features.list.element"].encodings) == {"RLE", "PLAIN"}  # no dictionary, no byte split


def test_the_default_codec_is_lz4_and_its_options_are_the_writers_own():
    from tlfs.features.schema import WRITE_OPTIONS

    assert DEFAULT_CODEC == "lz4" and write_options() == write_options("lz4") == WRITE_OPTIONS


def test_zstd_files_are_smaller_than_lz4_and_uncompressed_ones_larger():
    table = a_table(rows=1000, width=256)[0]
    sizes = {codec: encoded(table, codec).size for codec in CODECS}
    assert sizes["zstd"] < sizes["lz4"] < sizes["none"]


@pytest.mark.parametrize("codec", CODECS)
def test_the_space_a_run_is_told_it_needs_is_at_least_what_its_files_take_in_its_codec(codec):
    from tlfs.features.schema import estimated_bytes

    widths = [16, 24, 40, 112, 320, 1280]
    rng = np.random.default_rng(1)
    written = 0
    for width in widths:
        table = shard_table([f"train/airplane/{i:07d}.jpg" for i in range(500)], np.arange(500) % 10,
                            ["airplane"] * 500, rng.standard_normal((500, width)).astype(np.float16))  # incompressible
        written += encoded(table, codec).size
    assert written <= estimated_bytes(500, widths, codec) <= 1.15 * written


def test_an_unknown_codec_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown Parquet codec 'brotli': one of lz4, zstd, none"):
        write_options("brotli")
