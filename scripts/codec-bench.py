"""Parquet codecs for the feature column, timed on a committed set's real features.

Re-encodes every layer of one shard of a set (all its files for one split) with each
candidate's options, single-threaded, and prints images/s and bytes per candidate, so
the writer's choice (features/schema.py WRITE_OPTIONS) rests on measured features rather
than random data.

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

from tlfs.features.schema import WRITE_OPTIONS, features_matrix, row_columns, table_of

FEATURES = "features.list.element"
CANDIDATES = {
    "chosen": WRITE_OPTIONS,
    "lz4": dict(WRITE_OPTIONS, compression="lz4"),
    "snappy": dict(WRITE_OPTIONS, compression="snappy"),
    "none": dict(WRITE_OPTIONS, compression="none"),
    "zstd-1": dict(WRITE_OPTIONS, compression="zstd", compression_level=1),
    "byte-split+zstd-1": dict(WRITE_OPTIONS, compression="zstd", compression_level=1, use_byte_stream_split=[FEATURES]),
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
    results = {}
    for name, options in CANDIDATES.items():
        size = sum(encode(t, options) for t in tables)  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for t in tables:
                encode(t, options)
            times.append(time.perf_counter() - started)
        seconds = float(np.median(times))
        results[name] = {"images_per_s": round(rows / seconds), "mb": round(size / 1e6, 3), "vs_raw": round(size / raw, 3)}
        print(f"{name:20s} {rows / seconds:9.0f} images/s   {size / 1e6:7.2f} MB  ({size / raw:.3f} of raw)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
