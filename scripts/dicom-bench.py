"""What a DICOM X-ray costs to decode, by the compressions scanners write, against a 16-bit PNG
of the same samples.

A chest radiograph's size and depth (2,500 x 2,048 samples of 12 bits; scikit-image's camera
picture scaled up, with a little detector noise) saved as a 16-bit PNG and as DICOM files:
uncompressed, JPEG lossless (process 14, selection value 1) and JPEG-LS lossless; and its 8-bit
copy as a JPEG file and as a DICOM file of that JPEG (baseline, as RSNA's chest X-rays are
kept), each decoded as an extraction decodes it (pipeline/image_decode.decode, to the
224-pixel input): the median over ``--repeats`` of the CPU time and the wall time an image,
one process. The lossless DICOM files decode to the same pixels (checked).

    .venv/bin/python scripts/dicom-bench.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from decode_timing import report, timed
from tlfs.pipeline.image_decode import decode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import dicom_file  # noqa: E402  (the suite's builder of DICOM files)

SHAPE = (2500, 2048)  # rows x columns of a chest radiograph


def radiograph() -> np.ndarray:
    import skimage.data

    picture = Image.fromarray(skimage.data.camera()).resize(SHAPE[::-1], Image.Resampling.BICUBIC)
    samples = np.asarray(picture, np.float64) * 16 + np.random.default_rng(0).normal(0, 8, SHAPE)
    return np.clip(samples, 0, 4095).astype(np.uint16)


def encoded(samples: np.ndarray) -> dict[str, bytes]:
    import imagecodecs
    from pydicom import uid

    png = io.BytesIO()
    Image.fromarray(samples).save(png, "PNG")
    lossless = imagecodecs.jpeg8_encode(samples, lossless=True, predictor=1, bitspersample=12)
    eight = io.BytesIO()
    Image.fromarray((samples >> 4).astype(np.uint8)).save(eight, "JPEG", quality=90)
    return {"png_16bit": png.getvalue(),
            "dicom_uncompressed": dicom_file(samples, bits=12),
            "dicom_jpeg_lossless": dicom_file(samples, bits=12, syntax=uid.JPEGLosslessSV1, frames=[lossless]),
            "dicom_jpeg_ls": dicom_file(samples, bits=12, syntax=uid.JPEGLSLossless,
                                        frames=[imagecodecs.jpegls_encode(samples)]),
            "jpeg_8bit": eight.getvalue(),
            "dicom_jpeg_baseline_8bit": dicom_file((samples >> 4).astype(np.uint8), bits=8, syntax=uid.JPEGBaseline8Bit,
                                                   frames=[eight.getvalue()])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    payloads = encoded(radiograph())
    dicom = [decode(payloads[name], 224) for name in ("dicom_uncompressed", "dicom_jpeg_lossless", "dicom_jpeg_ls")]
    assert all((pixels == dicom[0]).all() for pixels in dicom), "the DICOM files decoded to different pixels"
    results = {name: timed(payload, args.repeats) for name, payload in payloads.items()}
    report(results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
