#!/usr/bin/env python3
"""What an incremental run adding 1 % of the images costs on an object store, against the
set's size in shards: its wall time and its requests by method.

    .venv/bin/python scripts/incremental-s3-bench.py --images 4000 --shard-size 100 --latency-ms 10

Starts moto's S3 server on loopback behind the latency proxy of tests/features/ (every
request waits ``--latency-ms``), extracts ``--images`` small JPEGs into a set on it
(EfficientNet-Lite0's real layer widths; inference replaced by ``tlfs bench
--host-only``'s trivial session, so only the host side and the store work), then adds a
source of 1 % more images and times that second run, plan to commit, counting the
requests it makes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONE = "efficientnet_lite0"


def write_tar(path: Path, images: int, prefix: str) -> str:
    rng = np.random.default_rng(len(prefix) + images)
    with tarfile.open(path, "w") as archive:
        for n in range(images):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
            info = tarfile.TarInfo(f"{'test' if n % 5 == 0 else 'train'}/class{n % 10}/{prefix}{n:07d}.jpg")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    args = parser.parse_args()

    from tests.features.conftest import start_server
    from tests.features.s3_fault_proxy import FaultyS3Proxy

    server, port = start_server([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p"])
    requests: Counter = Counter()
    counting = [False]

    def count(method: str, _path: str) -> None:
        if counting[0]:
            requests[method] += 1

    try:
        with FaultyS3Proxy(port, decide=count, latency=args.latency_ms / 1000) as proxy, \
                tempfile.TemporaryDirectory() as tmp:
            os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": proxy.endpoint})
            import fsspec

            fsspec.filesystem("s3", skip_instance_cache=True).mkdir("bench")
            from tlfs.models.export import export
            from tlfs.models.runtime import resolve_runtime
            from tlfs.pipeline import extract
            from tlfs.pipeline.bench import HostOnlySession
            from tlfs.pipeline.extract import ExtractionRequest, RunOptions

            base = write_tar(Path(tmp) / "base.tar", args.images, "a")
            added = write_tar(Path(tmp) / "added.tar", max(1, args.images // 100), "b")
            models = str(Path(tmp) / "models")
            artifact = export(BACKBONE, models, log=lambda *_: None)
            session = HostOnlySession(resolve_runtime("cpu"), dict(artifact.card["layers"]))
            options = RunOptions(show_progress=False, session=session)
            store = "s3://bench/store"
            first = extract.run(ExtractionRequest("bench", [base], BACKBONE, store, models,
                                                        shard_size=args.shard_size), options, log=lambda *_: None)
            counting[0] = True
            started = time.perf_counter()
            second = extract.run(ExtractionRequest("bench", [base, added], BACKBONE, store, models,
                                                         shard_size=args.shard_size), options, log=lambda *_: None)
            seconds = time.perf_counter() - started
            counting[0] = False
        print(json.dumps({
            "images": first["rows"], "added": second["rows"] - first["rows"], "shard_size": args.shard_size,
            "shards": first["shards"], "latency_ms": args.latency_ms,
            "incremental_run_seconds": round(seconds, 2), "requests": sum(requests.values()),
            "requests_by_method": dict(sorted(requests.items())),
            "plan_seconds": second["plan_seconds"], "extract_seconds": second["extract_seconds"],
            "commit_seconds": second["commit_seconds"],
        }))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
