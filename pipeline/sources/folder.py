"""An image-folder tree, ``<split>/<class>/<file>`` (or ``<class>/<file>`` with its split
given: :mod:`tlfs.pipeline.sources.paths`), as a directory, local or on an object
store. Its checksum is that of its listing (names and sizes). Files are read a batch at a
time: on an object store through fsspec's batched ``cat`` (concurrent requests, up to
``files.CONNECTIONS`` at once on S3), locally with a few threads."""

from __future__ import annotations

import hashlib
from typing import Iterator

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.sources.base import Indexed
from tlfs.pipeline.sources.hashing import fingerprint_info
from tlfs.pipeline.sources.paths import (image_id_of, image_path_parts, left_out, suffixless, tree_split, within,
                                         wrapper_folder)
from tlfs.pipeline.sources.reading import batch_reader, read_files

BATCH = 256  # files requested together: bounds the bytes held at once
SUFFIXLESS_SAMPLED = 5  # files without a suffix kept to look into where a dataset has no images


class ImageFolderDir:
    formats = ("imagefolder-dir",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        split = tree_split(uri, options)
        fs, root = batch_reader(uri)  # the instance that reads the files later (one client, one pool)
        found, bad, misplaced, unnamed = [], [], [], []
        listing = hashlib.sha256()
        root = root.rstrip("/")
        details = fs.find(root, withdirs=False, detail=True)
        wrapper = wrapper_folder((full[len(root) + 1:] for full in details), split)  # pets/train/cats/1.jpg
        for full in sorted(details):
            rel = full[len(root) + 1:]
            info = details[full]
            listing.update(f"{rel}\0{info.get('size')}\n".encode("utf-8", "surrogateescape"))
            parts = image_path_parts(within(rel, wrapper), split)
            if parts is None:
                if left_out(within(rel, wrapper), split):
                    misplaced.append(f"{uri.rstrip('/')}/{rel}")
                elif suffixless(rel) and len(unnamed) < SUFFIXLESS_SAMPLED:
                    unnamed.append(full)
                continue
            image_id = image_id_of(parts)
            if info.get("islink") or (hasattr(fs, "islink") and fs.islink(full)):
                bad.append(Reject(image_id, uri, "symbolic link (not followed)"))
                continue
            found.append(Entry(image_id, *image_id.split("/")[:2], number, full, fingerprint=fingerprint_info(info)))
        return Indexed(SourceInfo(uri, "imagefolder-dir", {"listing_sha256": listing.hexdigest()}, len(found), dict(options)),
                       found, bad, left_out=misplaced, suffixless=unnamed)

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        return files_in_batches(info.uri, wanted)


def files_in_batches(uri: str, wanted: list[Entry]) -> Iterator:
    """``(entry, bytes or Unreadable)`` of each of ``wanted``, whose members are file paths on
    ``uri``'s filesystem, ``BATCH`` files requested at a time (a folder's images, a CSV's)."""
    fs, _ = batch_reader(uri)
    for start in range(0, len(wanted), BATCH):
        batch = wanted[start:start + BATCH]
        yield from zip(batch, read_files(fs, [e.member for e in batch]))
