"""Decoding one image payload into uint8 RGB pixels, or a reason to reject it."""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlfs.pipeline.dicom import DICOM_RULE, headerless, is_dicom

# The most pixels one image may be decoded into (150 MB of RGB): more is a decompression bomb.
# A large JPEG is decoded at a reduced scale (draft), so a phone's 64 or 108 megapixel photo is
# decoded into a few megapixels and passes; a PNG of as many pixels does not. Pillow's own
# warning (above 89 megapixels in the file) is not a reason here; its error (above 179) is.
MAX_PIXELS = 50_000_000

# What decoding does: recorded in each version's manifest and in a plan's identity, so that a
# set never holds images decoded two ways (an incremental run re-extracts a version decoded otherwise)
PILLOW_DECODE = ("Pillow to RGB (HEIC by pillow-heif; a TIFF it does not read: tifffile), turned upright by its EXIF "
                 "orientation (alpha over white; more than 8 bits scaled to 8: 16-bit by 65535, or 2^N-1 where a TIFF "
                 "declares N bits, floats whose brightest sample is at most 1 by 1); images larger than the input size "
                 "resized on CPU with Pillow's antialiased bilinear to input_size x input_size")
DECODE = f"{PILLOW_DECODE}; {DICOM_RULE}"
# Earlier rules that this one only extends with a format they refused at indexing (DICOM): a
# set decoded by one of them holds the very pixels this rule gives its images, so it is reused
EXTENDED_RULES = (PILLOW_DECODE,)

# The bits a greyscale image's 16-bit samples hold: 16 unless said (a microscope's or an X-ray
# detector's 12-bit samples are stored in 16, 0-4095, and scaled by 65535 they come out 16 times
# darker). Never guessed: a set's images are scaled by one rule, recorded with it.
FULL_DEPTH = 16
BIT_DEPTHS = range(8, FULL_DEPTH + 1)


def decode_rule(bit_depth: int = FULL_DEPTH, rule: str | None = None) -> str:
    """What decoding (by ``rule``: this version's unless said) does with greyscale samples of
    ``bit_depth`` bits stored in 16 (the plan's identity and the lineage record it)."""
    rule = DECODE if rule is None else rule
    if bit_depth == FULL_DEPTH:
        return rule
    return f"{rule}; greyscale 16-bit samples hold {bit_depth} bits: scaled by {2 ** bit_depth - 1}"


def decoded_alike(recorded: str | None, bit_depth: int = FULL_DEPTH) -> bool:
    """Whether images decoded by the ``recorded`` rule (a set's lineage's) have the pixels
    that this version's rule for ``bit_depth`` gives them."""
    return recorded in {decode_rule(bit_depth, rule) for rule in (None, *EXTENDED_RULES)}


def pixels_rule(bit_depth: int = FULL_DEPTH) -> str:
    """The rule's text that keys what holds decoded pixels (label-next's kept pool features, a
    fine-tuning run's checkpoint): the earliest rule whose pixels this one gives, so that a rule
    which only adds a format keeps them."""
    return decode_rule(bit_depth, EXTENDED_RULES[0] if EXTENDED_RULES else None)


def bit_depth_of(lineage: dict) -> int:
    """The bit depth a set's images were decoded with (its lineage's; 16 where none is recorded)."""
    return int(lineage.get("preprocessing", {}).get("bit_depth", FULL_DEPTH))


def depth_said(bit_depth: int) -> str:
    """How a set's greyscale 16-bit images were scaled, for a reader (describe, the report)."""
    return f"greyscale 16-bit images as {bit_depth}-bit: scaled by {2 ** bit_depth - 1:,}"


def check_bit_depth(bit_depth: int) -> int:
    if bit_depth not in BIT_DEPTHS:
        from tlfs.pipeline.errors import PipelineError

        raise PipelineError(f"a bit depth is {BIT_DEPTHS.start} to {BIT_DEPTHS.stop - 1} (the bits that greyscale "
                            f"16-bit samples hold), not {bit_depth}")
    return bit_depth


EXIF_ORIENTATION = 0x0112
# how a camera's EXIF orientation (2-8) is undone, as Pillow's ImageOps.exif_transpose does
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


# The ISO media brands of HEIF images (a phone's HEIC), which Pillow reads once pillow-heif's plugin
# is registered with it: done the first time such a file comes, whatever its name
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")

# A TIFF's first bytes (little- and big-endian, classic and BigTIFF): one that Pillow does not
# read (float RGB, 64-bit samples: a scientific camera's or an analysis tool's) is read by tifffile
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


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


def decode(payload: bytes | np.ndarray, input_size: int, bit_depth: int = FULL_DEPTH) -> np.ndarray:
    """uint8 HxWx3 RGB. Images larger than the backbone's input are resized on the CPU
    (Pillow's antialiased bilinear) to ``input_size`` square; smaller ones keep their
    size and are resized inside the ONNX graph. ``bit_depth``: the bits a greyscale
    image's 16-bit samples hold (:func:`to_8bit`)."""
    if isinstance(payload, np.ndarray):
        return payload
    if isinstance(payload, Unreadable):
        raise ImageRejected(f"unreadable: {payload.reason}")
    if not payload:
        raise ImageRejected("empty file (0 bytes)")
    small = _small_colour_jpeg(payload, input_size)
    if small is not None:
        return small
    if is_dicom(payload):
        return _sized(_dicom(payload, input_size), input_size)
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the bound is MAX_PIXELS, decoded
            img = _opened(payload)
            stored = img.size
            if img.format == "JPEG" and max(img.size) > 2 * input_size:
                img.draft("RGB", (input_size, input_size))  # decode at a reduced scale: much faster, less memory
            if img.width * img.height > MAX_PIXELS:
                raise ImageRejected(f"decompression bomb: {stored[0]}x{stored[1]} pixels, "
                                    f"{img.width * img.height:,} decoded, over {MAX_PIXELS:,}")
            img.load()
            image = _upright(_rgb_or_grey(img, bit_depth), _orientation(img))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        if headerless(payload):  # a DICOM data set without its preamble, which no image format claims
            return _sized(_dicom(payload, input_size), input_size)
        if payload[:4] not in TIFF_MAGIC:
            raise ImageRejected(_unrecognised(payload)) from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:  # RuntimeError: Pillow's AVIF decoder's
        raise ImageRejected(f"corrupt or truncated image: {str(exc).strip()}") from exc
    except Exception as exc:  # a decoder's own kinds (a plugin's, libheif's): the image is rejected, the run goes on
        raise ImageRejected(f"not decodable: {type(exc).__name__}: {str(exc).strip()}") from exc
    return _sized(_tiff(payload, bit_depth) if image is None else image, input_size)


def _opened(payload: bytes) -> Image.Image:
    """Pillow's image of ``payload``, not yet decoded; a HEIC by pillow-heif's plugin (libheif
    applies the file's own rotation and mirroring, and its EXIF orientation then reads 1)."""
    if _heif(payload):
        _heif_plugin()
    return Image.open(io.BytesIO(payload))


def _heif(payload: bytes) -> bool:
    """Whether the payload is a HEIF image: an ISO media file whose brands name HEVC images."""
    if payload[4:8] != b"ftyp":
        return False
    brands = payload[8:min(int.from_bytes(payload[:4], "big"), 64)]  # the major brand, then compatible ones
    return any(brand in brands for brand in HEIF_BRANDS)


@functools.cache
def _heif_plugin() -> None:
    """pillow-heif's opener registered with Pillow (once a process: its import is 30 ms, paid
    only where a HEIC comes); 10-bit HEIC (a phone's HDR photo) opens as 8-bit."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _unrecognised(payload: bytes) -> str:
    if _heif(payload):
        return "corrupt or truncated HEIC (HEIF) image: not even its header reads"
    return "not a recognised image format"


def _dicom(payload: bytes, input_size: int) -> Image.Image:
    """A DICOM file's first frame, greyscale or RGB (:mod:`tlfs.pipeline.dicom`); its samples
    declare their bits, so no --bit-depth applies."""
    from tlfs.pipeline.dicom import DicomRejected, dicom_pixels

    try:
        pixels = dicom_pixels(payload, MAX_PIXELS, input_size)
    except DicomRejected as exc:
        raise ImageRejected(str(exc)) from None
    except Exception as exc:  # pydicom and its decoders raise many kinds on a damaged file
        what = "corrupt or unreadable DICOM" if is_dicom(payload) else \
            "not a recognised image format, nor a DICOM data set without its preamble"
        raise ImageRejected(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    return Image.fromarray(pixels)  # L or RGB


def _tiff(payload: bytes, bit_depth: int) -> Image.Image:
    """A TIFF that Pillow does not read, read by tifffile (its first page, as Pillow reads a
    multi-page file's first frame): upright RGB or greyscale, by the same rules as Pillow's images. A
    file whose tags contradict its samples is rejected, whatever tifffile makes of it."""
    try:
        return _tiff_picture(payload, bit_depth)
    except ImageRejected:
        raise
    except Exception as exc:  # tifffile raises many kinds on a broken or unsupported file
        raise ImageRejected(f"corrupt or unreadable TIFF: {type(exc).__name__}: {str(exc).strip()}") from exc


def _tiff_picture(payload: bytes, bit_depth: int) -> Image.Image:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(payload)) as tif:
            page = tif.pages[0]
            if page.imagewidth * page.imagelength > MAX_PIXELS:
                raise ImageRejected(f"decompression bomb: {page.imagewidth}x{page.imagelength} pixels, "
                                    f"over {MAX_PIXELS:,}")
            samples, bits = page.asarray(), page.bitspersample
            axes, orientation = page.axes, page.tags.valueof(EXIF_ORIENTATION, 1)
            colour = page.photometric.name
    except ImageRejected:
        raise
    except Exception as exc:  # tifffile raises many kinds on a broken or unsupported file
        raise ImageRejected(f"corrupt or unreadable TIFF: {type(exc).__name__}: {exc}") from exc
    if len(axes) != samples.ndim:
        raise ImageRejected(f"corrupt or unreadable TIFF: its axes {axes} do not match its samples' shape {samples.shape}")
    if "S" in axes:  # samples of a pixel (planar or interleaved) last
        samples = np.moveaxis(samples, axes.index("S"), -1)
    channels = samples.shape[-1] if samples.ndim == 3 else 1
    what = f"{'x'.join(map(str, samples.shape))} {samples.dtype} samples, axes {axes}"
    if samples.ndim > 3 or channels not in (1, 2, 3, 4):
        raise ImageRejected(f"a TIFF of {channels} channels ({what}): which of them make a picture is not known; "
                            "to be saved as greyscale or RGB")
    if colour not in ("MINISBLACK", "MINISWHITE", "RGB"):
        raise ImageRejected(f"a TIFF in {colour} colour ({what}), which is not read: to be converted to RGB")
    if not (samples.dtype == np.uint16 and BIT_DEPTHS.start <= bits < FULL_DEPTH):
        bits = bit_depth if channels <= 2 else FULL_DEPTH  # said by none: greyscale's as asked, colour's 16 as Pillow's
    pixels = to_8bit(samples, bits)
    if colour == "MINISWHITE":
        pixels = 255 - pixels
    image = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and channels == 1 else pixels)  # L, LA, RGB or RGBA
    return _upright(_rgb_or_grey(image), orientation if orientation in UPRIGHT else 1)


def to_8bit(samples: np.ndarray, bit_depth: int = FULL_DEPTH) -> np.ndarray:
    """Samples of any depth as uint8, by one rule for the whole image: floats whose
    brightest sample is at most 1 (float images' convention) scaled by 255, 16-bit integer
    samples by 255 / (2 ** bit_depth - 1) (65535 unless said), any other above 255 by
    255/65535, other samples (floats and wide integers of 0-255) as they are; then rounded
    and clipped to 0-255 (a float's NaN is 0; a sample above the bit depth's top is white)."""
    if samples.dtype == np.uint8:
        return samples
    if samples.dtype.kind == "u" and samples.dtype.itemsize == 2:  # through a table of every 16-bit value: the same
        return _table_of_16_bits(bit_depth)[samples]                # numbers as below, at a tenth of the time
    values = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=np.finfo(np.float64).max, neginf=0.0)
    top = values.max() if values.size else 0.0
    if samples.dtype.kind == "f" and top <= 1.0:
        scale = 1.0
    elif samples.dtype.kind in "ui" and samples.dtype.itemsize == 2:  # 16-bit samples holding bit_depth bits
        scale = 2.0 ** bit_depth - 1
    elif samples.dtype.itemsize == 2 or top > 255:  # a PGM's samples, which Pillow scales by its own maximum
        scale = 65535.0
    else:
        scale = 255.0
    return np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8)


@functools.cache
def _table_of_16_bits(bit_depth: int) -> np.ndarray:
    """Each 16-bit sample's 8-bit value, as :func:`to_8bit` scales it for ``bit_depth``."""
    return np.clip(np.rint(np.arange(2 ** 16, dtype=np.float64) * (255.0 / (2.0 ** bit_depth - 1))), 0, 255).astype(np.uint8)


def _sized(image: Image.Image, input_size: int) -> np.ndarray:
    """The RGB pixels, resized to ``input_size`` square where the image is larger (a greyscale
    one before it is made RGB: a third of the work, the same pixels)."""
    if max(image.size) > input_size:
        image = image.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


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


def declared_bits(img: Image.Image) -> int | None:
    """The bits a TIFF's samples hold where it says fewer than 16 (BitsPerSample 12: a
    camera's 12-bit samples, stored in 16), which no --bit-depth overrides; None otherwise."""
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return bits if isinstance(bits, int) and BIT_DEPTHS.start <= bits < FULL_DEPTH else None


def _rgb_or_grey(img: Image.Image, bit_depth: int = FULL_DEPTH) -> Image.Image:
    """The image in RGB, or in L where it is greyscale (made RGB once resized, by :func:`_sized`)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16-bit, 32-bit and float greyscale: scaled to 8 bits instead of clipped at 255
        img = Image.fromarray(to_8bit(np.asarray(img), declared_bits(img) or bit_depth), "L")
    if img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))  # transparent pixels become white
        return background
    return img if img.mode == "L" else img.convert("RGB")
