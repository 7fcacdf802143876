"""A DICOM file's picture (an X-ray's, a CT slice's, an ultrasound's): its first frame as 8-bit
greyscale or RGB samples, by the rules a radiology viewer shows it with, or a reason to reject it.

pydicom parses the file and decodes its pixel data (uncompressed, RLE, JPEG baseline and
JPEG 2000 through Pillow; JPEG lossless, JPEG-LS and 12-bit JPEG through imagecodecs); the
rules below are the standard's (PS3.3 C.11: the modality LUT, then the first VOI window)."""

from __future__ import annotations

import io
import warnings

import numpy as np

# A DICOM Part 10 file: a 128-byte preamble, then these four bytes
DICM_MAGIC = b"DICM"
PREAMBLE = 128

# The elements a DICOM file may hold its picture in (integer, float and double float samples)
PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# What is done with a DICOM file's samples: recorded in the decoding rule (image_decode.DECODE)
DICOM_RULE = ("DICOM by pydicom: its first frame (a greyscale 8-bit JPEG frame more than twice the input size "
              "decoded at a reduced scale, as JPEG files are); greyscale through its modality LUT (rescale slope and "
              "intercept), then its first VOI LUT or window (centre and width) to 0-255, else its own darkest "
              "to brightest value to 0-255, MONOCHROME1 inverted; YBR as RGB, palette colour through its LUT")


class DicomRejected(Exception):
    """The file is DICOM but holds no usable picture; the message is the reason."""


# The first bytes of a DICOM data set written without the preamble (an old ACR-NEMA file, a
# raw stream): a file meta (0002) or identifying (0008) group's first tag, either byte order
HEADERLESS_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def is_dicom(payload: bytes) -> bool:
    """Whether the payload is a DICOM file with its preamble and magic (a Part 10 file)."""
    return payload[PREAMBLE:PREAMBLE + 4] == DICM_MAGIC


def headerless(payload: bytes) -> bool:
    """Whether the payload may be a DICOM data set without the preamble: its first bytes a
    group 0002 or 0008 tag (asked only of a payload that no image format claims)."""
    return payload[:2] in HEADERLESS_GROUPS and len(payload) > PREAMBLE


def dicom_pixels(payload: bytes, max_pixels: int, input_size: int) -> np.ndarray:
    """The file's first frame as uint8 samples, HxW (greyscale) or HxWx3 (RGB); a greyscale
    JPEG frame more than twice ``input_size`` decoded at a reduced scale, as JPEG files are. Raises :class:`DicomRejected` for a file without a picture (a report, a
    structured document), of more than ``max_pixels``, or of a colour model not read; any
    other exception for a damaged file or a compression no decoder here reads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of each deviation it reads past (one a file, in every worker)
        pixels = _pixels(payload, max_pixels, input_size)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)) or 0 in pixels.shape:
        raise ValueError(f"its samples' shape {pixels.shape} is no picture (its image elements contradict each other)")
    return pixels


def _pixels(payload: bytes, max_pixels: int, input_size: int) -> np.ndarray:
    from pydicom import dcmread

    from tlfs.pipeline.dicom_jpeg import register

    register()

    part10 = is_dicom(payload)
    ds = dcmread(io.BytesIO(payload), force=not part10)
    if not part10 and "SOPClassUID" not in ds:
        raise ValueError("no DICOM data set read from its first bytes")
    if "TransferSyntaxUID" not in ds.file_meta:  # a data set without file meta: its pixels uncompressed, as read
        ds.file_meta.TransferSyntaxUID = _uncompressed_syntax(*ds.original_encoding)
    if not any(name in ds for name in PIXEL_ELEMENTS):
        if "Image Storage" in _kind(ds):  # a picture's class: its pixel data cut off, or stripped
            raise DicomRejected(f"corrupt or truncated DICOM: a {_kind(ds)} file without its pixel data")
        raise DicomRejected(f"a DICOM file without a picture (no pixel data): {_kind(ds)}")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * columns > max_pixels:
        raise DicomRejected(f"decompression bomb: {columns}x{rows} pixels, over {max_pixels:,}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = _first_frame(ds, frames, input_size)
    if colour == "MONOCHROME2":
        return _greyscale(samples, ds)
    if colour == "MONOCHROME1":  # the lowest value white (a radiograph as printed on film)
        return 255 - _greyscale(samples, ds)
    if colour == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _to_8bit(apply_color_lut(samples, ds), _lut_bits(ds.RedPaletteColorLookupTableDescriptor))
    if colour in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420") and samples.ndim == 3:
        return _to_8bit(samples, int(ds.BitsStored))  # pydicom gives YBR as RGB
    raise DicomRejected(f"a DICOM picture in {colour} colour ({_kind(ds)}), which is not read: to be converted to RGB")


def _uncompressed_syntax(implicit_vr: bool, little_endian: bool) -> str:
    from pydicom import uid

    if not little_endian:
        return uid.ExplicitVRBigEndian
    return uid.ImplicitVRLittleEndian if implicit_vr else uid.ExplicitVRLittleEndian


def _first_frame(ds, frames: int, input_size: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    if _reducible_jpeg(ds, input_size):
        from pydicom.encaps import get_frame
        from PIL import Image

        image = Image.open(io.BytesIO(get_frame(ds.PixelData, 0, number_of_frames=frames)), formats=("JPEG",))
        image.draft("L", (input_size, input_size))  # libjpeg's DCT scaling: a fraction of the work
        if image.mode == "L":
            return np.asarray(image)
    return pixel_array(ds, index=0 if frames > 1 else None)


def _reducible_jpeg(ds, input_size: int) -> bool:
    """An 8-bit greyscale JPEG frame (an X-ray, a CT slice as compressed) more than twice the
    input size, which libjpeg decodes at a reduced scale as it does a JPEG file."""
    from pydicom import uid

    return (ds.file_meta.get("TransferSyntaxUID") in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit)
            and int(ds.get("SamplesPerPixel", 1)) == 1 and int(ds.get("BitsAllocated", 0)) == 8
            and int(ds.get("BitsStored", 0)) == 8 and int(ds.get("PixelRepresentation", 0)) == 0
            and max(int(ds.Rows), int(ds.Columns)) > 2 * input_size)


def _greyscale(samples: np.ndarray, ds) -> np.ndarray:
    values, low, high = _shown(samples, ds)
    return _scaled(values, low, high)


def _shown(samples: np.ndarray, ds) -> tuple[np.ndarray, float, float]:
    """``(values, darkest, brightest)``: stored values -> modality values (Hounsfield units for
    a CT) -> the file's first VOI LUT or window, and the range they are shown in. Where the
    file gives neither, the standard leaves the choice to the viewer, and viewers show the
    image's own darkest to brightest value: so here (and for float samples, which have no
    stored bits to window)."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    if "PixelData" in ds:
        samples = apply_modality_lut(samples, ds)
        lut = (ds.get("VOILUTSequence") or [None])[0]
        if lut is not None and None not in (lut.get("LUTDescriptor"), lut.get("LUTData")):
            return apply_voi(samples, ds, index=0), 0.0, 2.0 ** _lut_bits(lut.LUTDescriptor) - 1
        if None not in (ds.get("WindowCenter"), ds.get("WindowWidth")):
            return apply_windowing(samples, ds, index=0), *_modality_range(ds)  # a window is mapped into that range
    values = np.asarray(samples)
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        return (values, float(finite.min()), float(finite.max())) if finite.size else (values, 0.0, 1.0)
    return values, float(values.min()), float(values.max())


def _modality_range(ds) -> tuple[float, float]:
    """The range of the modality values the stored bits can give, into which pydicom's
    windowing maps a window."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, 2.0 ** _lut_bits(ds.ModalityLUTSequence[0].LUTDescriptor) - 1
    bits = int(ds.BitsStored)
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0.0, 2.0 ** bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ends = (low * slope + intercept, high * slope + intercept)
    return min(ends), max(ends)


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low``-``high`` as 0-255, rounded; below and above clipped, a float's NaN black."""
    span = high - low if high > low else 1.0
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / span)
    if scaled.dtype.kind == "f" and np.asarray(values).dtype.kind == "f":
        scaled[np.isnan(scaled)] = 0
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def _to_8bit(samples: np.ndarray, bits: int) -> np.ndarray:
    return samples if samples.dtype == np.uint8 else _scaled(samples, 0.0, 2.0 ** bits - 1)


def _lut_bits(descriptor) -> int:
    """A LUT's bits per entry (its descriptor's third value; some files say 16 of 8-bit data)."""
    return int(descriptor[2]) if len(descriptor) > 2 and int(descriptor[2]) in (8, 16) else 16


def _kind(ds) -> str:
    """What the file is, as its SOP class names it (an X-ray, a structured report)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return UID(str(sop)).name if sop else "no SOP class given"
