import io

import numpy as np
import pytest
from PIL import Image

from tlfs.pipeline.image_decode import ImageRejected, decode
from tests.conftest import png_bytes


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("LA", "PNG")])
def test_every_common_mode_becomes_uint8_rgb(mode, fmt):
    out = decode(png_bytes((100, 150, 200), mode=mode, fmt=fmt), 224)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    array = np.full((8, 8), 32768, np.uint16)
    out = decode(encode(Image.fromarray(array)), 224)  # mode I;16
    assert 120 <= out[0, 0, 0] <= 135  # half of full scale


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode(encode(img), 224)[0, 0].tolist() == [255, 255, 255]


def test_images_larger_than_the_input_are_resized_on_cpu():
    assert decode(png_bytes((1, 2, 3), size=(500, 300)), 224).shape == (224, 224, 3)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "empty file"),
        (b"not an image at all", "not a recognised image format"),
        (png_bytes((1, 2, 3), fmt="JPEG")[:200], "corrupt or truncated"),
        (png_bytes((1, 2, 3))[:60], "corrupt or truncated"),
    ],
)
def test_broken_files_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode(payload, 224)


def test_decompression_bomb_is_rejected():
    img = Image.new("1", (10000, 10000))  # 100 megapixels, a tiny file
    with pytest.raises(ImageRejected, match="decompression bomb"):
        decode(encode(img), 224)
