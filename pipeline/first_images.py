"""At planning, the first few of a dataset's PNG, TIFF, JPEG 2000, PGM and DICOM images read to tell
what their names cannot, before a run extracts them all one way:

- how many bits greyscale 16-bit images use: a microscope's or an X-ray detector's 12-bit
  images are stored in 16 bits (0-4095), and scaled as 16-bit (by 65535) they come out 16
  times darker. The bit depth is never guessed (a set's images are scaled by one rule), so
  planning says what it saw and which ``--bit-depth`` scales them by their own range;
- TIFF stacks (several pages: z-planes, channels or times, as ImageJ saves them) and DICOM
  files of several frames (a CT or MR volume, an ultrasound's cine), of which only the first
  page or frame is read, as of any multi-frame file."""

from __future__ import annotations

import io
import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from tlfs.pipeline.dataset_index import DatasetIndex
from tlfs.pipeline.dicom import is_dicom
from tlfs.pipeline.image_decode import FULL_DEPTH, MAX_PIXELS, declared_bits
from tlfs.pipeline.indexing import iter_payloads

SAMPLED = 12  # images read: a few reads of the first files, nothing beside the run's reading
# formats that hold 16-bit greyscale or stacks
DEEP_SUFFIXES = (".png", ".tif", ".tiff", ".jp2", ".j2k", ".pgm", ".dcm", ".dicom")
CAMERA_DEPTHS = (8, 10, 12, 14)  # the bits sensors store in 16: the depth a sample's brightest value suggests
SAMPLED_FORMATS = ("imagefolder-dir", "imagefolder-zip", "imagefolder-tar", "webdataset-tar", "labels-csv")


@dataclass(frozen=True)
class Look:
    """What one image's header (and, for greyscale 16-bit, its pixels) says."""

    brightest: int | None  # a greyscale 16-bit image's brightest sample that declares no bits; else None
    pages: int  # a TIFF's pages, a DICOM file's frames (1 for any other image)
    dicom: bool = False


def first_images_notices(index: DatasetIndex, bit_depth: int, cache_dir: str | None = None) -> list[str]:
    """Notes on the first images of ``index`` (at most :data:`SAMPLED` read; none for a
    dataset without such formats, which are not read): their bit depth where it suggests
    another than ``bit_depth``, and TIFF stacks and DICOM files of several frames."""
    looks = _looks(index, cache_dir)
    return [notice for notice in (depth_notice(looks, bit_depth), *stack_notices(looks)) if notice]


def depth_notice(looks: dict[str, Look], bit_depth: int) -> str:
    """What the greyscale 16-bit images looked at say of ``bit_depth``: "" where it fits them."""
    sampled = {image_id: look.brightest for image_id, look in looks.items() if look.brightest is not None}
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


def stack_notices(looks: dict[str, Look]) -> list[str]:
    """TIFF stacks and DICOM files of several frames among the images looked at: only their
    first page or frame is read."""
    notices = []
    for dicom in (False, True):
        stacks = {image_id: look.pages for image_id, look in looks.items() if look.pages > 1 and look.dicom == dicom}
        if not stacks:
            continue
        example, pages = next(iter(stacks.items()))
        if dicom:
            are = "is a DICOM file" if len(stacks) == 1 else "are DICOM files"
            notices.append(f"note: {len(stacks)} of the {len(looks)} images read to check {are} of several frames "
                           f"(such as {example}, {pages} frames: a volume's slices or a cine's frames); only the "
                           "first frame of each is read: to use the others, save one file a slice or frame")
        else:
            are = "is a TIFF stack" if len(stacks) == 1 else "are TIFF stacks"
            notices.append(f"note: {len(stacks)} of the {len(looks)} images read to check {are} (such as {example}, "
                           f"{pages} pages: z-planes, channels or times); only the first page of each is read: to use "
                           "another, or several as colours, save the images as such")
    return notices


def _looks(index: DatasetIndex, cache_dir: str | None) -> dict[str, Look]:
    """Each of the first :data:`SAMPLED` images of such formats (in the index's order): what it says."""
    sampled_sources = {n for n, info in enumerate(index.sources) if info.format in SAMPLED_FORMATS}
    entries = list(itertools.islice((e for e in index.entries if e.source in sampled_sources
                                     and e.image_id.lower().endswith(DEEP_SUFFIXES)), SAMPLED))
    if not entries:
        return {}
    looks: dict[str, Look] = {}
    for entry, payload in iter_payloads(index.sources, sorted(entries, key=lambda e: e.source), cache_dir):
        if isinstance(payload, (bytes, bytearray)) and (look := _look(payload)) is not None:
            looks[entry.image_id] = look
    return looks


def _look(payload: bytes) -> Look | None:
    """What the image's header says, its pixels decoded only for a greyscale 16-bit image that
    declares no bits; None for a file Pillow cannot open (decoding tells why, in its turn)."""
    from PIL import Image

    if is_dicom(payload):
        return _dicom_look(payload)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(payload))
            pages = getattr(img, "n_frames", 1) if img.format == "TIFF" else 1
            deep = img.mode.startswith("I;16") and img.width * img.height <= MAX_PIXELS and not declared_bits(img)
            return Look(int(np.asarray(img).max()) if deep else None, pages)
    except Exception:
        return None


def _dicom_look(payload: bytes) -> Look | None:
    """A DICOM file's frames, from its header alone (its samples declare their bits)."""
    from pydicom import dcmread

    try:
        header = dcmread(io.BytesIO(payload), stop_before_pixels=True)
        return Look(None, int(header.get("NumberOfFrames", 1) or 1), dicom=True)
    except Exception:
        return None
