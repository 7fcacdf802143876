"""Parquet codecs for the feature column, timed on a committed set's real features.

Re-encodes every layer of one shard of a set (all its files for one split) with each
candidate's options, single-threaded, the candidates taking turns (median of
``--repeats``), and prints images/s, the thread's CPU time an image, and bytes per
candidate: the ``codec`` setting's choices (features/codecs.py) first, lz4 the default,
so that the choice rests on measured features rather than random data.

    .venv/bin/python scripts/codec-bench.py --set tlfs-data/store/cifar10/efficientnet_lite0-... [--split train]
"""

from __future__ import annotations

import argparse
import glob
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features.codecs import CODECS
from tlfs.features.schema import WRITE_OPTIONS, features_matrix, row_columns, table_of, write_options

CANDIDATES = {
    **{codec: write_options(codec) for codec in CODECS},  # the ``codec`` setting's choices, lz4 (the default) first
    "snappy": dict(WRITE_OPTIONS, compression="snappy"),
    "byte-split+zstd-1": dict(WRITE_OPTIONS, compression="zstd", compression_level=1,
                              use_byte_stream_split=["features.list.element"]),  # DuckDB 2.0 cannot read it
    # the encoder's own settings, beside the codec: is the nested list's encoding cheaper some other way?
    "v2-pages": dict(WRITE_OPTIONS, data_page_version="2.0"),
    "batches-of-64k": dict(WRITE_OPTIONS, write_batch_size=1 << 16),
    "pages-of-8mb": dict(WRITE_OPTIONS, data_page_size=8 << 20),
}


def shard_tables(set_uri: str, split: str) -> list[pa.Table]:
    files = sorted(glob.glob(f"{set_uri}/layer=*/split={split}/*.parquet"))
    first_part = files[0].rsplit("/", 1)[1] if files else None
    tables = []
    for path in (f for f in files if f.endswith(first_part)):
        table = pq.read_table(path)
        matrix = features_matrix(table["features"], np.float16)
        columns = row_columns(table["image_id"].to_pylist(), table["label"].to_numpy(), table["label_name"].to_pylist())
        tables.append(table_of(columns, matrix))
    if not tables:
        raise SystemExit(f"{set_uri}: no shard files for split={split}")
    return tables


def encode(table: pa.Table, options: dict) -> int:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="a committed feature set's folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tables = shard_tables(args.set, args.split)
    rows = tables[0].num_rows
    raw = sum(t["features"].combine_chunks().values.nbytes for t in tables)
    print(f"{len(tables)} layers, {rows} rows, {raw / 1e6:.2f} MB of float16")
    sizes = {name: sum(encode(t, options) for t in tables) for name, options in CANDIDATES.items()}  # and a warm-up
    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    cpu: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(args.repeats):  # the candidates take turns, so that the machine's drift is shared
        for name, options in CANDIDATES.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            for t in tables:
                encode(t, options)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.thread_time() - started_cpu)
    results = {}
    for name, size in sizes.items():
        seconds, cpu_us = float(np.median(times[name])), float(np.median(cpu[name])) / rows * 1e6
        results[name] = {"images_per_s": round(rows / seconds), "cpu_us_per_image": round(cpu_us, 1),
                         "mb": round(size / 1e6, 3), "vs_raw": round(size / raw, 3)}
        print(f"{name:20s} {rows / seconds:9.0f} images/s  {cpu_us:6.1f} µs CPU an image  {size / 1e6:7.2f} MB  "
              f"({size / raw:.3f} of raw)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
