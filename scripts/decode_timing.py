"""What decoding one payload costs, as an extraction decodes it (pipeline/image_decode.decode, to
the 224-pixel input): the median CPU and wall time of ``repeats`` decodes, one process. Shared
by the decoding benches (heic-bench.py, dicom-bench.py)."""

from __future__ import annotations

import statistics
import time

from tlfs.pipeline.image_decode import decode


def timed(payload: bytes, repeats: int) -> dict:
    decode(payload, 224)  # the codec loaded, a plugin registered
    cpu, wall = [], []
    for _ in range(repeats):
        started_cpu, started = time.process_time(), time.perf_counter()
        decode(payload, 224)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return {"bytes": len(payload), "cpu_ms": round(statistics.median(cpu) * 1000, 1),
            "wall_ms": round(statistics.median(wall) * 1000, 1)}


def report(results: dict[str, dict]) -> None:
    for name, r in results.items():
        print(f"{name}: {r['bytes'] / 1e6:.2f} MB, {r['cpu_ms']} ms of CPU, {r['wall_ms']} ms wall an image")
