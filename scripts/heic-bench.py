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

import numpy as np
from PIL import Image

from decode_timing import report, timed

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {name: timed(payload, args.repeats) for name, payload in encoded(photo()).items()}
    report(results)
    print(f"heic / jpeg CPU: {results['heic']['cpu_ms'] / results['jpeg']['cpu_ms']:.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
