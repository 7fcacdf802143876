"""A PNG sheet of images in groups side by side, each captioned (``tlfs duplicates --sheet``:
pairs, to judge by eye where a threshold cuts; ``tlfs similar --sheet``: each image given
beside its most similar stored ones). The stored images are read again from the set's
sources by their ids."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

THUMB = 96  # pixels a side for each image on the sheet
INSIDE = 2  # pixels between the images of a group
BETWEEN = 14  # pixels between groups
CAPTION = 14  # pixels of text under each image
TITLE = 18  # pixels of a section's title


def images_by_id(feature_set, image_ids: set[str], log: Callable[[str], None] = print) -> dict[str, np.ndarray | str]:
    """Each of ``image_ids``'s pixels (uint8 HxWx3, at most the backbone's input size), read
    from the sources the set's lineage names, or why it could not be read."""
    from tlfs.pipeline.image_decode import ImageRejected, bit_depth_of, decode
    from tlfs.pipeline.indexing import build_index, iter_payloads
    from tlfs.pipeline.sources.uris import recorded_uris

    sources = feature_set.lineage["sources"]
    uris = recorded_uris(sources)
    log(f"reading {len(image_ids)} images again from {', '.join(uris)}")
    try:
        index = build_index(feature_set.dataset, uris)
    except Exception as exc:  # a source moved or gone: the sheet cannot be drawn, the pairs stand
        raise PipelineError(f"the images of {feature_set.uri} cannot be read again from its sources ({exc})") from exc
    changed = [s.uri for s, then in zip(index.sources, sources) if s.checksum != then["checksum"]]
    if changed:
        log(f"note: {', '.join(changed)} changed since the set was extracted; the sheet shows the images as they are now")
    size, bit_depth = feature_set.lineage["preprocessing"]["input_size"], bit_depth_of(feature_set.lineage)
    wanted = [entry for entry in index.entries if entry.image_id in image_ids]
    found: dict[str, np.ndarray | str] = {i: "not in its source any more" for i in image_ids}
    for entry, payload in iter_payloads(index.sources, wanted):
        try:
            found[entry.image_id] = decode(payload, size, bit_depth) if not isinstance(payload, Exception) else str(payload)
        except ImageRejected as exc:
            found[entry.image_id] = str(exc)
    return found


def image_sheet(sections: list[tuple[str, list[list[tuple[str, str]]]]], images: dict[str, np.ndarray | str],
                per_row: int) -> bytes:
    """PNG bytes: for each ``(title, groups)`` section, its title and its groups, ``per_row``
    a row; a group is ``[(key of its pixels in images, caption), ...]``, drawn left to right,
    each image scaled to ``THUMB`` pixels with its caption under it (lines apart at ``\n``)."""
    from PIL import Image, ImageDraw

    size = max((len(group) for _, groups in sections for group in groups), default=1)
    group_width = size * THUMB + (size - 1) * INSIDE + BETWEEN
    lines = max((caption.count("\n") + 1 for _, groups in sections for group in groups for _, caption in group), default=1)
    cell = THUMB + lines * CAPTION
    rows = sum(-(-len(groups) // per_row) for _, groups in sections)
    sheet = Image.new("RGB", (per_row * group_width, rows * cell + len(sections) * TITLE), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, groups in sections:
        draw.text((4, y + 3), title, fill="black")
        y += TITLE
        for number, group in enumerate(groups):
            x, top = (number % per_row) * group_width, y + (number // per_row) * cell
            for place, (key, caption) in enumerate(group):
                left = x + place * (THUMB + INSIDE)
                sheet.paste(_thumbnail(images.get(key, "not read")), (left, top))
                draw.text((left, top + THUMB + 1), caption, fill="black", spacing=2)
        y += -(-len(groups) // per_row) * cell
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()


def _thumbnail(pixels: np.ndarray | str):
    """The image scaled to fit ``THUMB`` square (small ones by whole pixels, as they are),
    or a grey square where it could not be read."""
    from PIL import Image

    if isinstance(pixels, str):
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
    image = Image.fromarray(pixels)
    scale = THUMB / max(image.size)
    small = max(image.size) * 2 <= THUMB
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR)
    square = Image.new("RGB", (THUMB, THUMB), "white")
    square.paste(resized, ((THUMB - resized.width) // 2, (THUMB - resized.height) // 2))
    return square
