"""What a phone's HEIC costs to decode, against a JPEG of the same photo.

A 12-megapixel photo (scikit-image's astronaut, scaled to 4032 x 3024 as a phone shoots it,
with a little sensor noise) saved as HEIC (pillow-heif's libheif, quality 50) and as JPEG
(quality 90), each decoded as an extraction decodes it (pipeline/image_decode.decode, to the
224-pixel input): the median over ``--repeats`` of the CPU time and the wall time an image,
one process. A JPEG that large is decoded at a reduced scale (Pillow's draft); libheif
decodes every pixel of the HEIC.

    .venv/bin/python scripts/heic-bench.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

import numpy as np
from PIL import Image

from tlfs.pipeline.image_decode import decode

SIZE = (4032, 3024)  # a phone's 12 megapixels


def photo() -> np.ndarray:
    import skimage.data

    pixels = np.asarray(Image.fromarray(skimage.data.astronaut()).resize(SIZE, Image.Resampling.BICUBIC), np.float32)
    return np.clip(pixels + np.random.default_rng(0).normal(0, 2, pixels.shape), 0, 255).astype(np.uint8)


def encoded(pixels: np.ndarray) -> dict[str, bytes]:
    import pillow_heif

    heic, jpeg = io.BytesIO(), io.BytesIO()
    pillow_heif.from_bytes(mode="RGB", size=SIZE, data=pixels.tobytes()).save(heic, quality=50)
    Image.fromarray(pixels).save(jpeg, "JPEG", quality=90)
    return {"heic": heic.getvalue(), "jpeg": jpeg.getvalue()}


def timed(payload: bytes, repeats: int) -> dict:
    decode(payload, 224)  # the codec loaded, the plugin registered
    cpu, wall = [], []
    for _ in range(repeats):
        started_cpu, started = time.process_time(), time.perf_counter()
        decode(payload, 224)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return {"bytes": len(payload), "cpu_ms": round(statistics.median(cpu) * 1000, 1),
            "wall_ms": round(statistics.median(wall) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {name: timed(payload, args.repeats) for name, payload in encoded(photo()).items()}
    for name, r in results.items():
        print(f"{name}: {r['bytes'] / 1e6:.2f} MB, {r['cpu_ms']} ms of CPU, {r['wall_ms']} ms wall an image")
    print(f"heic / jpeg CPU: {results['heic']['cpu_ms'] / results['jpeg']['cpu_ms']:.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
