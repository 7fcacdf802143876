#!/usr/bin/env python3
"""Scale simulation (issue 14): N small JPEGs in K tar archives, then what planning costs.

    .venv/bin/python scripts/scale-sim.py --images 1000000 --archives 100 --work /tmp/scale

Writes the archives (``train|test/class<k>/<n>.jpg``, 10 classes, the JPEG bytes drawn from
a pool of 256 small images), plans an extraction of all of them through the DAG's own
planning step (``tasks.plan_extraction``, EfficientNet-Lite0, shard size 2,500), and prints
one JSON line: planning seconds, the plan's bytes (in all, and per shard), the number of
shard tasks, and one shard task's start-up (reading the plan and its own entries). The
archives are given as one glob, as a user would give them."""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_archives(folder: Path, images: int, archives: int) -> list[str]:
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(256):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
        pool.append(buffer.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    paths, per_archive = [], -(-images // archives)
    for a in range(archives):
        path = folder / f"part-{a:04d}.tar"
        paths.append(str(path))
        if path.exists():
            continue
        with tarfile.open(path, "w") as archive:
            for n in range(a * per_archive, min(images, (a + 1) * per_archive)):
                data = pool[n % len(pool)]
                info = tarfile.TarInfo(f"{'test' if n % 6 == 0 else 'train'}/class{n % 10}/{n:08d}.jpg")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--archives", type=int, default=100)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    work = Path(args.work)
    started = time.perf_counter()
    sources = write_archives(work / f"data-{args.images}", args.images, args.archives)
    generated = time.perf_counter() - started
    os.environ.setdefault("TLFS_MODELS", str(work / "models"))
    os.environ["TLFS_STORE"] = str(work / f"store-{args.images}")
    from tlfs.features import layout
    from tlfs.pipeline import extract, tasks

    started = time.perf_counter()
    glob = str(work / f"data-{args.images}" / "part-*.tar")
    planned = tasks.plan_extraction(f"scale{args.images}", "efficientnet_lite0", tasks.ExtractionParams(sources=(glob,)),
                                    log=lambda *_: None)
    plan_seconds = time.perf_counter() - started
    plan_bytes = Path(layout.plan_uri(planned["set_uri"], planned["plan_id"])).stat().st_size
    entries_bytes = Path(layout.entries_uri(planned["set_uri"], planned["plan_id"])).stat().st_size
    started = time.perf_counter()
    p = extract.load_plan(planned["set_uri"], planned["plan_id"])
    entries = p.shard_entries(len(p.shards) // 2)
    startup = time.perf_counter() - started
    print(json.dumps({
        "images": planned["images"], "archives": len(sources), "shards": len(planned["shards"]),
        "shard_tasks": len(planned["shard_groups"]), "generate_seconds": round(generated, 1),
        "plan_seconds": round(plan_seconds, 1), "plan_json_bytes": plan_bytes, "entries_bytes": entries_bytes,
        "plan_bytes_per_shard": round((plan_bytes + entries_bytes) / len(planned["shards"])),
        "shard_task_startup_seconds": round(startup, 3), "entries_in_that_shard": len(entries),
    }))


if __name__ == "__main__":
    main()
