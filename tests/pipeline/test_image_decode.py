import io

import numpy as np
import pytest
from PIL import Image

from tlfs.pipeline import image_decode
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
        # a phone's HEIC (the ISO media box that opens one), named .jpg or not: told to be converted
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "a HEIC .* to be converted to JPEG or PNG"),
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


def test_a_large_jpeg_decoded_at_a_reduced_scale_passes_where_a_png_of_its_size_is_a_bomb(monkeypatch):
    """The bound is on the pixels decoded: a phone's 64-megapixel JPEG is decoded at an eighth
    of its scale and is no bomb; a PNG is decoded whole (here with the bound scaled down 50x)."""
    monkeypatch.setattr(image_decode, "MAX_PIXELS", 1_000_000)
    photo = Image.new("RGB", (1850, 1390), (90, 140, 200))  # 2.6 megapixels: 64 scaled down 25x
    pixels = decode(encode(photo, "JPEG"), 224)
    assert pixels.shape == (224, 224, 3) and abs(int(pixels[100, 100, 2]) - 200) < 4
    with pytest.raises(ImageRejected, match=r"decompression bomb: 1850x1390 pixels, 2,571,500 decoded, over 1,000,000"):
        decode(encode(photo, "PNG"), 224)


def _plugin_pixels(payload: bytes, input_size: int) -> np.ndarray:
    """What Pillow's JPEG plugin decodes (the path every image took before the fast one)."""
    img = Image.open(io.BytesIO(payload))
    img.load()
    rgb = img.convert("RGB")
    if max(rgb.size) > input_size:
        rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


@pytest.mark.parametrize("size,options", [
    ((32, 32), dict(quality=75)),  # CIFAR's
    ((31, 17), dict(quality=90, subsampling=0)),  # odd sizes, 4:4:4
    ((200, 120), dict(quality=40, subsampling=1)),  # 4:2:2
    ((300, 260), dict(quality=95, progressive=True)),  # larger than the input: resized after
    ((64, 48), dict(quality=80, restart_marker_blocks=2)),
    ((40, 40), dict(quality=70, icc_profile=b"\0" * 64)),
])
def test_a_small_colour_jpeg_is_decoded_straight_to_the_same_pixels_as_pillows_plugin(size, options):
    from tlfs.pipeline.image_decode import _small_colour_jpeg, jpeg_header

    rng = np.random.default_rng(sum(size))
    buffer = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(buffer, "JPEG", **options)
    payload = buffer.getvalue()
    assert jpeg_header(payload) == (*size, 3, False)
    assert _small_colour_jpeg(payload, 224) is not None  # it took the fast path
    assert np.array_equal(decode(payload, 224), _plugin_pixels(payload, 224))


def test_what_the_fast_path_does_not_take_goes_the_full_way():
    from tlfs.pipeline.image_decode import _small_colour_jpeg, jpeg_header

    grey = encode(Image.new("L", (20, 10), 7), "JPEG")
    assert jpeg_header(grey) == (20, 10, 1, False) and _small_colour_jpeg(grey, 224) is None
    assert decode(grey, 224)[0, 0].tolist() == [7, 7, 7]
    photo = encode(Image.new("RGB", (1000, 800), (9, 9, 9)), "JPEG")  # decoded at a reduced scale by the plugin
    assert _small_colour_jpeg(photo, 224) is None and decode(photo, 224).shape == (224, 224, 3)
    cut = encode(Image.new("RGB", (32, 32), (1, 2, 3)), "JPEG")[:-40]
    assert _small_colour_jpeg(cut, 224) is None  # the decoder's error: the full path gives the reason
    with pytest.raises(ImageRejected, match="corrupt or truncated"):
        decode(cut, 224)
    assert jpeg_header(png_bytes((1, 2, 3))) is None and jpeg_header(b"\xff\xd8\xff\xda") is None


def _tagged(img: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    img.save(buffer, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(40, 24), (600, 360)])  # the size the fast path would take, and a photo's
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_is_turned_upright_by_its_exif_orientation_as_a_viewer_shows_it(size, fmt):
    """A phone stores a portrait photo as it was shot, sideways, with an EXIF orientation
    saying how to turn it; viewers (and Hugging Face's datasets) show it upright, and the
    backbone sees it so too, whatever the format or size."""
    from PIL import ImageOps

    from tlfs.pipeline.image_decode import jpeg_header

    left, right = Image.new("RGB", (size[0] // 2, size[1]), (250, 0, 0)), Image.new("RGB", (size[0] // 2, size[1]), (0, 0, 250))
    stored = Image.new("RGB", size)
    stored.paste(left, (0, 0)), stored.paste(right, (size[0] // 2, 0))  # red left half, blue right half
    for orientation in range(1, 9):
        payload = _tagged(stored, orientation, fmt)
        if fmt == "JPEG":
            assert jpeg_header(payload).exif  # not for the fast path
        shown = ImageOps.exif_transpose(Image.open(io.BytesIO(payload))).convert("RGB")  # what a viewer shows
        expected = np.asarray(shown.resize((224, 224), Image.Resampling.BILINEAR) if max(shown.size) > 224 else shown)
        pixels = decode(payload, 224)
        assert pixels.shape == expected.shape, orientation
        assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= (2 if size[0] > 448 else 0), orientation
    sideways = decode(_tagged(stored, 6, fmt), 224)  # turned a quarter: red on top, blue below
    assert sideways[2, sideways.shape[1] // 2, 0] > 200 and sideways[-3, sideways.shape[1] // 2, 2] > 200


def test_broken_exif_metadata_leaves_the_image_as_it_is_stored():
    """An EXIF segment Pillow cannot parse must not turn a readable image into a reject."""
    payload = encode(Image.new("RGB", (30, 20), (5, 6, 7)), "JPEG")
    broken = payload[:2] + b"\xff\xe1\x00\x0cExif\x00\x00MM\x00*" + payload[2:]  # a TIFF header cut short
    assert decode(broken, 224).shape == (20, 30, 3)
