"""A feature set's codec (the ``codec`` setting): how its shard files are compressed,
what they cost to write against what they take to store (docs/benchmarks.md: Parquet
codecs). Plain options for ``pyarrow.parquet.write_table``, kept apart from
features/schema.py so that the configuration, which Airflow's DAG files import, does not
import pyarrow. Every Parquet reader reads each (tests/features/test_readers.py).

- ``lz4``, the default: fast, and a little smaller than the raw float16.
- ``zstd``: zstd at level 1: a fifth smaller than ``lz4`` on real features, more CPU to write.
- ``none``: the least CPU, the largest files.

Splitting the features' bytes by significance before zstd (BYTE_STREAM_SPLIT) is left out:
on Lite0's features it took nothing more off, and DuckDB (2.0) cannot read it on float16.
"""

CODEC_OPTIONS = {
    "lz4": dict(compression="lz4"),
    "zstd": dict(compression="zstd", compression_level=1),
    "none": dict(compression="none"),
}
CODECS = tuple(CODEC_OPTIONS)
DEFAULT_CODEC = "lz4"
# At most what a feature value takes in a file, for planning's estimate of the space a run
# needs: compressed, the float16 bytes (lz4 takes 6 % off real features, zstd 22 %);
# uncompressed, the list's levels add to them (Lite0's real features: 1.03x without the ids)
BYTES_PER_VALUE = {"lz4": 2.0, "zstd": 2.0, "none": 2.1}
