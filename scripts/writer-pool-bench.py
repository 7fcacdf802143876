#!/usr/bin/env python3
"""The writer pool's scaling: the files of 8 shards of 2,500 images (a backbone's real
layer widths) gathered to float16, encoded, hashed and written atomically by the same
functions as ``tlfs extract``'s pool (pipeline/inference.gather_layer, features/writer),
with 1 thread and with N; median of 3 runs each.

    .venv/bin/python scripts/writer-pool-bench.py --backbone efficientnet_lite0 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tlfs.features.schema import row_columns, table_of
from tlfs.features.writer import encode_shard, put_shard
from tlfs.pipeline.float16_cast import Float16Cast
from tlfs.pipeline.inference import gather_layer
from tlfs.pipeline.stage_bench import layer_widths

SHARDS, ROWS, BATCH = 8, 2500, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    widths = layer_widths(args.backbone)
    rng = np.random.default_rng(0)
    batches = {layer: [rng.random((min(BATCH, ROWS - i), width), dtype=np.float32) for i in range(0, ROWS, BATCH)]
               for layer, width in widths.items()}
    order = np.arange(ROWS)
    ids = [f"train/c{n % 10}/{n:07d}.jpg" for n in range(ROWS)]
    labels = np.arange(ROWS, dtype=np.int16) % 10
    columns = row_columns(ids, labels, [f"c{label}" for label in labels])  # once per shard, as the pool does
    to_float16 = Float16Cast()  # one per pool, as the pool does

    def job(folder: str, shard: int, layer: str) -> int:
        matrix = gather_layer(batches[layer], order, widths[layer], to_float16)
        return put_shard(f"{folder}/{layer}/part-{shard:05d}.parquet",
                         encode_shard(table_of(columns, matrix))).bytes

    def rate(threads: int) -> float:
        with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(threads) as pool:
            job(folder, 99, next(iter(widths)))  # warm-up
            started = time.perf_counter()
            list(pool.map(lambda a: job(folder, *a), [(s, layer) for s in range(SHARDS) for layer in widths]))
            return SHARDS * ROWS / (time.perf_counter() - started)

    one = statistics.median(rate(1) for _ in range(3))
    many = statistics.median(rate(args.threads) for _ in range(3))
    print(json.dumps({"backbone": args.backbone, "images": SHARDS * ROWS, "one_thread_images_per_s": round(one, 1),
                      f"{args.threads}_threads_images_per_s": round(many, 1), "speedup": round(many / one, 2)}))


if __name__ == "__main__":
    main()
