"""Decoding one image payload into uint8 RGB pixels, or a reason to reject it."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

# The most pixels one image may be decoded into (150 MB of RGB): more is a decompression bomb.
# A large JPEG is decoded at a reduced scale (draft), so a phone's 64 or 108 megapixel photo is
# decoded into a few megapixels and passes; a PNG of as many pixels does not. Pillow's own
# warning (above 89 megapixels in the file) is not a reason here; its error (above 179) is.
MAX_PIXELS = 50_000_000

# What decoding does: recorded in each version's manifest and in a plan's identity, so that a
# set never holds images decoded two ways (an incremental run re-extracts a version decoded otherwise)
DECODE = ("Pillow to RGB, turned upright by its EXIF orientation (alpha over white, 16-bit scaled); images "
          "larger than the input size resized on CPU with Pillow's antialiased bilinear to input_size x input_size")

EXIF_ORIENTATION = 0x0112
# how a camera's EXIF orientation (2-8) is undone, as Pillow's ImageOps.exif_transpose does
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


# The ISO media brands of HEIF images (a phone's HEIC), which Pillow does not read: such a
# file, whatever its name, is told to be converted rather than called unrecognised
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")


class ImageRejected(Exception):
    """The payload is not a usable image; the message is the reason recorded."""


@dataclass(frozen=True)
class Unreadable:
    """The payload of an image its source could not read: why (plain data, so that it
    travels to a decode worker process as it is)."""

    reason: str

    @classmethod
    def of(cls, error: BaseException) -> "Unreadable":
        return cls(str(error))


def decode(payload: bytes | np.ndarray, input_size: int) -> np.ndarray:
    """uint8 HxWx3 RGB. Images larger than the backbone's input are resized on the CPU
    (Pillow's antialiased bilinear) to ``input_size`` square; smaller ones keep their
    size and are resized inside the ONNX graph."""
    if isinstance(payload, np.ndarray):
        return payload
    if isinstance(payload, Unreadable):
        raise ImageRejected(f"unreadable: {payload.reason}")
    if not payload:
        raise ImageRejected("empty file (0 bytes)")
    small = _small_colour_jpeg(payload, input_size)
    if small is not None:
        return small
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the bound is MAX_PIXELS, decoded
            img = Image.open(io.BytesIO(payload))
            stored = img.size
            if img.format == "JPEG" and max(img.size) > 2 * input_size:
                img.draft("RGB", (input_size, input_size))  # decode at a reduced scale: much faster, less memory
            if img.width * img.height > MAX_PIXELS:
                raise ImageRejected(f"decompression bomb: {stored[0]}x{stored[1]} pixels, "
                                    f"{img.width * img.height:,} decoded, over {MAX_PIXELS:,}")
            img.load()
            rgb = _upright(_to_rgb(img), _orientation(img))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageRejected(_unrecognised(payload)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    return _sized(rgb, input_size)


def _unrecognised(payload: bytes) -> str:
    if payload[4:8] == b"ftyp" and payload[8:12] in HEIF_BRANDS:
        return "a HEIC (HEIF) image, a format not read: to be converted to JPEG or PNG"
    return "not a recognised image format"


def _sized(rgb: Image.Image, input_size: int) -> np.ndarray:
    """The pixels, resized to ``input_size`` square where the image is larger."""
    if max(rgb.size) > input_size:
        rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1: upright as stored); 1 where it has none, or where its
    EXIF cannot be parsed (broken metadata does not make a readable image a reject)."""
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        return orientation if orientation in UPRIGHT else 1  # a malformed tag's value may not even hash
    except Exception:  # Pillow's EXIF parser raises many kinds on malformed tags
        return 1


def _upright(rgb: Image.Image, orientation: int) -> Image.Image:
    return rgb.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else rgb


class JpegHeader(NamedTuple):
    width: int
    height: int
    components: int
    exif: bool  # an EXIF segment comes before the frame (it may turn the image: not for the fast path)


def jpeg_header(payload: bytes) -> JpegHeader | None:
    """A JPEG's width, height and colour components from its frame header (SOFn), and
    whether EXIF metadata comes before it, or None if the payload is no JPEG or its markers
    end before a frame."""
    if payload[:2] != b"\xff\xd8":
        return None
    at = 2
    exif = False
    while at + 4 <= len(payload):
        if payload[at] != 0xFF:
            return None
        marker = payload[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if marker == 0xDA:  # scan data before any frame header
            return None
        length = int.from_bytes(payload[at + 2:at + 4], "big")
        if marker == 0xE1 and payload[at + 4:at + 10] == b"Exif\0\0":  # APP1
            exif = True
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if at + 10 > len(payload):
                return None
            height = int.from_bytes(payload[at + 5:at + 7], "big")
            width = int.from_bytes(payload[at + 7:at + 9], "big")
            return JpegHeader(width, height, payload[at + 9], exif)
        at += 2 + length
    return None


def _small_colour_jpeg(payload: bytes, input_size: int) -> np.ndarray | None:
    """A colour JPEG that needs no reduced-scale decoding, run straight through Pillow's
    JPEG decoder with the very arguments its JPEG plugin gives it (so the same pixels),
    without the plugin's Python parsing of the file: half the time of a CIFAR image.
    None for anything else (EXIF metadata included: its orientation may turn the image),
    or any error: :func:`decode`'s full path then decides."""
    header = jpeg_header(payload)
    if header is None or header.exif:
        return None
    width, height, components, _ = header
    if components != 3 or not 0 < width * height <= MAX_PIXELS or max(width, height) > 2 * input_size:
        return None
    try:
        rgb = Image.frombytes("RGB", (width, height), payload, "jpeg", "RGB", "")
    except (OSError, ValueError):
        return None
    return _sized(rgb, input_size)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping at 255
        array = np.asarray(img, dtype=np.float64)
        top = array.max() or 1.0
        scale = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0
        img = Image.fromarray(np.clip(array / scale * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))  # transparent pixels become white
        return background
    return img.convert("RGB")
