"""Decoding one image payload into uint8 RGB pixels, or a reason to reject it."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both count as a
# decompression bomb here. 50 megapixels is far above any photo a CNN needs.
MAX_PIXELS = 50_000_000


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(payload))
            if img.width * img.height > MAX_PIXELS:
                raise ImageRejected(f"decompression bomb: {img.width}x{img.height} pixels exceeds {MAX_PIXELS}")
            if img.format == "JPEG" and max(img.size) > 2 * input_size:
                img.draft("RGB", (input_size, input_size))  # decode at a reduced scale: much faster
            img.load()
            rgb = _to_rgb(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageRejected("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    if max(rgb.size) > input_size:
        rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


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
