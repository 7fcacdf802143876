#!/usr/bin/env python3
"""Reading a folder source on an object store with latency (issue 14).

    .venv/bin/python scripts/s3-latency-bench.py --images 2000 --latency-ms 20

Starts moto's S3 server on loopback behind the fault proxy of tests/features/, which
adds ``--latency-ms`` to every request; uploads a folder of small JPEGs; then reads
every image twice through the proxy, with the same warm client: one request after
another (the sequential rate), and through the folder source, as an extraction does
(fsspec's batched ``cat``). Prints one JSON line with both rates and their ratio. The
proxy and moto run in processes of their own; on a small machine their CPU, not the
latency, can bound the batched rate."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def jpegs(count: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for n in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
        files[f"{'test' if n % 5 == 0 else 'train'}/class{n % 10}/{n:06d}.jpg"] = buffer.getvalue()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    from tests.features.conftest import start_server

    server, port = start_server([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p"])
    proxy = None
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
    import fsspec
    import s3fs

    try:
        direct = fsspec.filesystem("s3", endpoint_url=f"http://127.0.0.1:{port}", skip_instance_cache=True)
        direct.mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            for rel, data in jpegs(args.images).items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_bytes(data)
            direct.put(tmp + "/", "bench/folder/", recursive=True)
        proxy, endpoint = start_proxy(port, args.latency_ms / 1000)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        s3fs.S3FileSystem.clear_instance_cache()
        from tlfs.pipeline.indexing import build_index, iter_payloads
        from tlfs.pipeline.sources.reading import batch_reader

        started = time.perf_counter()
        index = build_index("bench", ["s3://bench/folder"])
        index_seconds = time.perf_counter() - started
        fs, _ = batch_reader("s3://bench/folder")  # the client the folder source reads with, already warm
        started = time.perf_counter()
        sequential = sum(len(fs.cat_file(e.member)) for e in index.entries)
        sequential_seconds = time.perf_counter() - started
        started = time.perf_counter()
        batched = sum(len(p) for _, p in iter_payloads(index.sources, index.entries))
        batched_seconds = time.perf_counter() - started
        assert batched == sequential, "the two reads disagree"
        n = len(index.entries)
        print(json.dumps({
            "images": n, "latency_ms": args.latency_ms, "index_seconds": round(index_seconds, 2),
            "sequential_images_per_s": round(n / sequential_seconds, 1),
            "batched_images_per_s": round(n / batched_seconds, 1),
            "speedup": round(sequential_seconds / batched_seconds, 1),
        }))
    finally:
        for process in (proxy, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


def start_proxy(upstream: int, latency: float) -> tuple[subprocess.Popen, str]:
    """The latency proxy in a process of its own, so that its threads do not share the
    reader's interpreter lock."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from tests.features.s3_fault_proxy import FaultyS3Proxy; "
            "p = FaultyS3Proxy(int(sys.argv[2]), latency=float(sys.argv[3])).__enter__(); "
            "print(p.endpoint, flush=True); time.sleep(1e9)")
    process = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(upstream), str(latency)],
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


if __name__ == "__main__":
    main()
