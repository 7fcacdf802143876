import io

import numpy as np
import pytest
from PIL import Image

from tlfs.pipeline import image_decode
from tlfs.pipeline.image_decode import ImageRejected, decode
from tests.conftest import dicom_file, heic, png_bytes, smooth_picture, xray


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("LA", "PNG")])
def test_every_common_mode_becomes_uint8_rgb(mode, fmt):
    out = decode(png_bytes((100, 150, 200), mode=mode, fmt=fmt), 224)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)


def test_a_cielab_tiff_decodes_to_its_colours_not_its_bands():
    """A scanner's CIELab TIFF comes out in its colours (Pillow converts Lab to sRGB)."""
    from PIL import ImageCms

    to_lab = ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                                     "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.new("RGB", (4, 4), (220, 30, 30)), to_lab)
    assert np.abs(decode(encode(lab, "TIFF"), 224)[0, 0].astype(int) - [220, 30, 30]).max() <= 3


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
        # a phone's HEIC whose header breaks off (the ISO media box that opens one, then nothing)
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "corrupt or truncated HEIC"),
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


def _tiff(samples: np.ndarray, **options) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, **options)
    return buffer.getvalue()


GRADIENT = np.stack([*np.meshgrid(np.arange(40), np.arange(30)), np.full((30, 40), 7)], axis=-1).astype(np.uint8) * 6  # 0-234, 0-174, 42


def test_a_float_image_in_0_to_1_decodes_as_its_8_bit_self_not_black():
    """Float images hold 0-1 by convention (a microscope's analysis tools, scikit-image):
    scaled as if 0-255 they came out black, and a backbone saw nothing."""
    grey = GRADIENT[..., 0]
    payload = _tiff(grey.astype(np.float32) / 255, photometric="minisblack")
    assert Image.open(io.BytesIO(payload)).mode == "F"  # Pillow's own path
    assert np.array_equal(decode(payload, 224), np.repeat(grey[..., None], 3, axis=-1))


@pytest.mark.parametrize("name,samples,options", [
    ("float RGB", GRADIENT.astype(np.float32) / 255, {"photometric": "rgb"}),
    ("float RGB, planes apart", np.moveaxis(GRADIENT.astype(np.float32) / 255, -1, 0),
     {"photometric": "rgb", "planarconfig": "separate"}),
    ("64-bit float RGB", GRADIENT.astype(np.float64) / 255, {"photometric": "rgb"}),
    ("float RGB, LZW with the floating-point predictor (as GDAL writes it)", GRADIENT.astype(np.float32) / 255,
     {"photometric": "rgb", "compression": "lzw", "predictor": True}),
])
def test_a_tiff_pillow_does_not_read_is_read_by_tifffile(name, samples, options):
    """Float colour TIFFs (what scientific cameras and analysis tools write) were rejected
    as 'not a recognised image format'; tifffile reads them, by the same scaling rule."""
    payload = _tiff(samples, **options)
    with pytest.raises(Exception):
        Image.open(io.BytesIO(payload)).load()
    assert np.array_equal(decode(payload, 224), GRADIENT), name


def test_a_tifffile_image_is_composited_on_white_and_turned_upright():
    rgba = np.concatenate([GRADIENT.astype(np.float32) / 255, np.zeros((30, 40, 1), np.float32)], axis=-1)
    assert (decode(_tiff(rgba, photometric="rgb", extrasamples=["unassalpha"]), 224) == 255).all()
    sideways = _tiff(GRADIENT.astype(np.float32) / 255, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    assert np.array_equal(decode(sideways, 224), np.asarray(Image.fromarray(GRADIENT).transpose(Image.Transpose.ROTATE_270)))


def test_a_float_image_s_nan_is_black_and_its_samples_above_1_are_scaled_as_before():
    nan = np.full((4, 4, 3), np.nan, np.float32)
    assert (decode(_tiff(nan, photometric="rgb"), 224) == 0).all()
    hundreds = np.full((4, 4), 100.0, np.float32)  # a float image of 0-255: as it is
    assert (decode(_tiff(hundreds, photometric="minisblack"), 224) == 100).all()


@pytest.mark.parametrize("samples,options,reason", [
    (np.zeros((30, 40, 5), np.float32), {"photometric": "minisblack", "planarconfig": "contig"},
     r"a TIFF of 5 channels \(30x40x5 float32 samples, axes YXS\): which of them make a picture is not known"),
    (np.zeros((30, 40, 4), np.float32), {"photometric": "separated"}, "a TIFF in SEPARATED colour .* to be converted to RGB"),
])
def test_a_tiff_that_is_no_picture_is_rejected_with_what_it_holds(samples, options, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode(_tiff(samples, **options), 224)


def test_a_broken_tiff_is_rejected_with_tifffile_s_reason():
    payload = _tiff(GRADIENT.astype(np.float32) / 255, photometric="rgb")
    with pytest.raises(ImageRejected, match="corrupt or unreadable TIFF: ValueError: failed to read"):
        decode(payload[:-500], 224)


def test_a_phones_heic_photo_is_read_whatever_its_name():
    """iPhones save HEIC (HEVC in HEIF) by default: read through pillow-heif's plugin, which
    Pillow takes once the first such file comes; the name plays no part (decoding sees bytes)."""
    pixels = smooth_picture()
    payload = heic(pixels)
    assert payload[4:12] == b"ftypheic"
    decoded = decode(payload, 224)
    assert decoded.shape == pixels.shape and np.abs(decoded.astype(int) - pixels).mean() < 3  # lossy, as a phone's
    with pytest.raises(ImageRejected, match="corrupt or truncated image: .*"):
        decode(payload[:len(payload) // 2], 224)


def test_a_damaged_file_of_any_format_read_is_rejected_never_raised(recwarn):
    """Bytes flipped in TIFFs (those tifffile reads, and Pillow's), a 16-bit PNG, a HEIC, an AVIF and
    DICOM files (uncompressed with a window, JPEG lossless, JPEG-LS, colour):
    every outcome is pixels or a reason, never another exception, which would stop the run
    instead of recording the one image as rejected."""
    import random

    gradient = GRADIENT.astype(np.float32) / 255
    seeds = [_tiff(gradient, photometric="rgb"), _tiff(gradient, photometric="rgb", compression="lzw", predictor=True),
             _tiff(np.moveaxis(gradient, -1, 0), photometric="rgb", planarconfig="separate"),
             _tiff(np.zeros((3, 16, 16), np.uint16), photometric="minisblack"), heic(),
             encode(Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 16)),
             encode(Image.fromarray(smooth_picture()), "AVIF"), *_dicom_seeds()]
    rng = random.Random(1)
    for _ in range(800):
        damaged = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.2:
            damaged = damaged[:rng.randrange(len(damaged))]
        try:
            assert decode(bytes(damaged), 224).dtype == np.uint8
        except ImageRejected:
            pass


def _dicom_seeds() -> list[bytes]:
    import imagecodecs
    from pydicom import uid

    samples = xray(shape=(24, 20))
    lossless = imagecodecs.jpeg8_encode(samples, lossless=True, predictor=1, bitspersample=12)
    return [dicom_file(samples, bits=12, RescaleIntercept=-1024, RescaleSlope=1, WindowCenter=40, WindowWidth=400),
            dicom_file(samples, bits=12, syntax=uid.JPEGLosslessSV1, frames=[lossless]),
            dicom_file(samples, bits=12, syntax=uid.JPEGLSLossless, frames=[imagecodecs.jpegls_encode(samples)]),
            dicom_file(GRADIENT[:16, :16], "RGB"),
            dicom_file(np.tile(GRADIENT[..., 0], (16, 12)), bits=8, syntax=uid.JPEGBaseline8Bit,  # 480x480: reduced
                       frames=[encode(Image.fromarray(np.tile(GRADIENT[..., 0], (16, 12))), "JPEG")])]


@pytest.mark.parametrize("bit_depth", [8, 12, 16])
def test_every_16_bit_sample_is_scaled_by_the_rule_rounded_and_clipped(bit_depth):
    samples = np.arange(2 ** 16, dtype=np.uint16).reshape(256, 256)
    expected = np.clip(np.rint(samples.astype(np.float64) * 255 / (2 ** bit_depth - 1)), 0, 255).astype(np.uint8)
    assert (image_decode.to_8bit(samples, bit_depth) == expected).all()
    assert (image_decode.to_8bit(samples.astype(">u2"), bit_depth) == expected).all()  # a big-endian file's


@pytest.mark.parametrize("size", [(40, 30), (500, 380)])
def test_a_greyscale_image_decodes_as_its_rgb_copy_does(size):
    """Greyscale images are resized before they are made RGB (a third of the work): the same pixels."""
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8))
    assert (decode(encode(grey), 224) == decode(encode(grey.convert("RGB")), 224)).all()
