"""A PNG sheet of image pairs side by side (``tlfs duplicates --sheet``): the images read
again from the set's sources by their ids, each pair captioned with its similarity and
labels, so that a threshold can be judged by eye where it cuts."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

THUMB = 96  # pixels a side for each image on the sheet
COLUMNS = 4  # pairs a row


def images_by_id(feature_set, image_ids: set[str], log: Callable[[str], None] = print) -> dict[str, np.ndarray | str]:
    """Each of ``image_ids``'s pixels (uint8 HxWx3, at most the backbone's input size), read
    from the sources the set's lineage names, or why it could not be read."""
    from tlfs.pipeline.image_decode import ImageRejected, decode
    from tlfs.pipeline.indexing import build_index, iter_payloads
    from tlfs.pipeline.sources.uris import given_uri

    sources = feature_set.lineage["sources"]
    uris = [given_uri(s["uri"], s.get("options")) for s in sources]
    log(f"reading {len(image_ids)} images again from {', '.join(uris)}")
    try:
        index = build_index(feature_set.dataset, uris)
    except Exception as exc:  # a source moved or gone: the sheet cannot be drawn, the pairs stand
        raise PipelineError(f"the images of {feature_set.uri} cannot be read again from its sources ({exc})") from exc
    changed = [s.uri for s, then in zip(index.sources, sources) if s.checksum != then["checksum"]]
    if changed:
        log(f"note: {', '.join(changed)} changed since the set was extracted; the sheet shows the images as they are now")
    size = feature_set.lineage["preprocessing"]["input_size"]
    wanted = [entry for entry in index.entries if entry.image_id in image_ids]
    found: dict[str, np.ndarray | str] = {i: "not in its source any more" for i in image_ids}
    for entry, payload in iter_payloads(index.sources, wanted):
        try:
            found[entry.image_id] = decode(payload, size) if not isinstance(payload, Exception) else str(payload)
        except ImageRejected as exc:
            found[entry.image_id] = str(exc)
    return found


def pair_sheet(sections: list[tuple[str, list[tuple[str, str, str]]]], images: dict[str, np.ndarray | str]) -> bytes:
    """PNG bytes: for each ``(title, [(left id, right id, caption), ...])`` section, its
    title and its pairs, ``COLUMNS`` a row, each image scaled to ``THUMB`` pixels."""
    from PIL import Image, ImageDraw

    pair_width, caption, title_height = 2 * THUMB + 16, 14, 18
    rows = sum(-(-len(pairs) // COLUMNS) for _, pairs in sections)
    sheet = Image.new("RGB", (COLUMNS * pair_width, rows * (THUMB + caption) + len(sections) * title_height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, pairs in sections:
        draw.text((4, y + 3), title, fill="black")
        y += title_height
        for number, (left, right, text) in enumerate(pairs):
            x, top = (number % COLUMNS) * pair_width, y + (number // COLUMNS) * (THUMB + caption)
            for offset, image_id in ((0, left), (THUMB + 2, right)):
                sheet.paste(_thumbnail(images.get(image_id, "not read")), (x + offset, top))
            draw.text((x, top + THUMB + 1), text, fill="black")
        y += -(-len(pairs) // COLUMNS) * (THUMB + caption)
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
