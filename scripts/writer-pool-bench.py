#!/usr/bin/env python3
"""The writer pool's scaling: the files of 8 shards of 2,500 images (a backbone's real
layer widths) gathered to float16, encoded, hashed and written atomically by the same
functions and in the same order as ``tlfs extract``'s pool (pipeline/inference.gather_layer,
features/writer, pipeline/shard_writer.widest_first), with 1 thread and with N, taking
turns; median of 3 runs each (``--runs``), and the speedup of each side's fastest run
(``speedup_of_fastest``: on a shared machine the least disturbed runs).

    .venv/bin/python scripts/writer-pool-bench.py --backbone efficientnet_lite0 --threads 2

Besides the speedup it prints what tells the code's share of a shortfall from the
machine's: ``cores_busy`` (the process's CPU time over the wall time with N threads: N
where no thread waits on another, or on the GIL), the CPU time per image with 1 and with N
threads (equal where the cores are as fast together as alone), and ``machine_speedup``,
what N threads get against 1 on this machine at that time (taking turns with the pool's
runs) for work that releases the GIL: ``sha256`` (hashing the same bytes: bound by the
cores) and ``memory_copy`` (copying arrays too large for the caches: bound by memory
bandwidth, as Parquet encoding partly is). ``speedup_without_file_writes``: the same
pool's job up to the encoded, hashed bytes, not written (the medians' ratio): where it is
well above ``speedup``, the files' writes hold the pool back (features/direct_io.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tlfs.features.schema import row_columns, table_of
from tlfs.features.writer import encode_shard, put_shard
from tlfs.pipeline.float16_cast import Float16Cast
from tlfs.pipeline.inference import gather_layer
from tlfs.pipeline.shard_writer import widest_first
from tlfs.pipeline.stage_bench import layer_widths

SHARDS, ROWS, BATCH = 8, 2500, 64
BLOCK, BLOCKS = 16 << 20, 16  # the machine's ceilings: 256 MB hashed, and copied, in 16 MB blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of each, taking turns (the median is given)")
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

    def job(folder: str | None, shard: int, layer: str) -> int:
        blocks = gather_layer(batches[layer], order, widths[layer], to_float16)
        encoded = encode_shard(table_of(columns, blocks))
        if folder is None:  # the job up to the hashed bytes: what the files' writes cost apart
            return encoded.bytes
        return put_shard(f"{folder}/{layer}/part-{shard:05d}.parquet", encoded).bytes

    # in the pool's order: shard after shard, a shard's widest layers first
    jobs = [(s, layer) for s in range(SHARDS) for _, layer, _ in widest_first(("image",), widths)]

    def pool_run(threads: int, write: bool = True) -> Timed:
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(threads) as pool:
            folder = tmp if write else None
            job(folder, 99, next(iter(widths)))  # warm-up
            return timed(lambda: list(pool.map(lambda a: job(folder, *a), jobs)))

    blocks = [rng.bytes(BLOCK) for _ in range(BLOCKS)]
    copies = [(np.frombuffer(b, np.uint8), np.empty(BLOCK, np.uint8)) for b in blocks]

    def ceiling_run(threads: int, work) -> Timed:
        with ThreadPoolExecutor(threads) as pool:
            return timed(lambda: list(pool.map(work, range(BLOCKS))))

    hashing = lambda n: hashlib.sha256(blocks[n]).digest()  # noqa: E731
    copying = lambda n: np.copyto(copies[n][1], copies[n][0])  # noqa: E731
    for n in range(BLOCKS):  # warm-up: the first copy into each block takes its pages from the kernel
        copying(n)
    runs: dict[str, list[Timed]] = {}
    for _ in range(args.runs):  # taking turns, so that the machine's moods fall on each alike
        for name, run in (("one", lambda: pool_run(1)), ("many", lambda: pool_run(args.threads)),
                          ("unwritten_one", lambda: pool_run(1, write=False)),
                          ("unwritten_many", lambda: pool_run(args.threads, write=False)),
                          ("sha256_one", lambda: ceiling_run(1, hashing)),
                          ("sha256_many", lambda: ceiling_run(args.threads, hashing)),
                          ("copy_one", lambda: ceiling_run(1, copying)),
                          ("copy_many", lambda: ceiling_run(args.threads, copying))):
            runs.setdefault(name, []).append(run())
    wall = {name: statistics.median(r.wall for r in each) for name, each in runs.items()}
    one, many = wall["one"], wall["many"]
    cpu_one, cpu_many = (statistics.median(r.cpu for r in runs[k]) for k in ("one", "many"))
    images = SHARDS * ROWS
    print(json.dumps({"backbone": args.backbone, "images": images, "one_thread_images_per_s": round(images / one, 1),
                      f"{args.threads}_threads_images_per_s": round(images / many, 1), "speedup": round(one / many, 2),
                      # each side's fastest run: the least disturbed by the machine's other tenants
                      "speedup_of_fastest": round(min(r.wall for r in runs["one"]) / min(r.wall for r in runs["many"]), 2),
                      "cores_busy": round(cpu_many / many, 2),
                      # the same job without writing the files (encoded and hashed only): the files' writes apart
                      "speedup_without_file_writes": round(wall["unwritten_one"] / wall["unwritten_many"], 2),
                      "cpu_us_per_image": {"1": round(cpu_one / images * 1e6, 1),
                                           str(args.threads): round(cpu_many / images * 1e6, 1)},
                      "machine_speedup": {"sha256": round(wall["sha256_one"] / wall["sha256_many"], 2),
                                          "memory_copy": round(wall["copy_one"] / wall["copy_many"], 2)}}))


@dataclass(frozen=True)
class Timed:
    wall: float  # seconds
    cpu: float  # the process's CPU seconds (every thread's)


def timed(work) -> Timed:
    started, cpu = time.perf_counter(), time.process_time()
    work()
    return Timed(time.perf_counter() - started, time.process_time() - cpu)


if __name__ == "__main__":
    main()
