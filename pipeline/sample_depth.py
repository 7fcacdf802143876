"""At planning, a few of a dataset's greyscale 16-bit images read to see how many of their
bits they use: a microscope's or an X-ray detector's 12-bit images are stored in 16 bits
(0-4095), and scaled as 16-bit (by 65535) they come out 16 times darker; the bit depth is
never guessed (a set's images are scaled by one rule), so planning says what it saw and
which ``--bit-depth`` would scale them by their own range."""

from __future__ import annotations

import io
import itertools
import warnings

import numpy as np

from tlfs.pipeline.dataset_index import DatasetIndex
from tlfs.pipeline.image_decode import FULL_DEPTH, MAX_PIXELS, declared_bits
from tlfs.pipeline.indexing import iter_payloads

SAMPLED = 12  # images read: a few reads of the first files, nothing beside the run's reading
DEEP_SUFFIXES = (".png", ".tif", ".tiff", ".jp2", ".j2k", ".pgm")  # formats that hold 16-bit greyscale
CAMERA_DEPTHS = (8, 10, 12, 14)  # the bits sensors store in 16: the depth a sample's brightest value suggests
SAMPLED_FORMATS = ("imagefolder-dir", "imagefolder-zip", "imagefolder-tar", "webdataset-tar", "labels-csv")


def depth_notice(index: DatasetIndex, bit_depth: int, cache_dir: str | None = None) -> str:
    """A note on what the first greyscale 16-bit images of ``index`` (at most :data:`SAMPLED`
    read) say of ``bit_depth``, where they suggest another; "" otherwise (and for datasets
    without such images, which are not read)."""
    sampled = _brightest(index, cache_dir)
    if not sampled:
        return ""
    example, top = max(sampled.items(), key=lambda item: item[1])
    scale = 2 ** bit_depth - 1
    if top > scale:
        return (f"note: {example} holds samples up to {top:,}, above {scale:,}, the top of {bit_depth}-bit samples "
                f"(--bit-depth {bit_depth}): those above come out white")
    fits = next((bits for bits in CAMERA_DEPTHS if top < 2 ** bits), FULL_DEPTH)
    if fits >= bit_depth:
        return ""
    return (f"note: the {len(sampled)} greyscale 16-bit images read to check (such as {example}) hold no sample above "
            f"{top:,}: if they are {fits}-bit images (0-{2 ** fits - 1:,}), scaled as {bit_depth}-bit they come out "
            f"{2 ** (bit_depth - fits)} times darker than their range; --bit-depth {fits} scales them by {2 ** fits - 1:,}")


def _brightest(index: DatasetIndex, cache_dir: str | None) -> dict[str, int]:
    """Each sampled greyscale 16-bit image's id and its brightest sample."""
    sampled_sources = {n for n, info in enumerate(index.sources) if info.format in SAMPLED_FORMATS}
    entries = list(itertools.islice((e for e in index.entries if e.source in sampled_sources
                                     and e.image_id.lower().endswith(DEEP_SUFFIXES)), SAMPLED))
    if not entries:
        return {}
    found: dict[str, int] = {}
    for entry, payload in iter_payloads(index.sources, sorted(entries, key=lambda e: e.source), cache_dir):
        if isinstance(payload, (bytes, bytearray)) and (top := _brightest_sample(payload)) is not None:
            found[entry.image_id] = top
    return found


def _brightest_sample(payload: bytes) -> int | None:
    """The brightest sample of a greyscale 16-bit image; None for any other image, or a
    file Pillow cannot read (decoding tells why, in its turn)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(payload))
            if not img.mode.startswith("I;16") or img.width * img.height > MAX_PIXELS or declared_bits(img):
                return None  # known from the header (a TIFF that says its bits is scaled by them): no pixel decoded
            return int(np.asarray(img).max())
    except Exception:
        return None
