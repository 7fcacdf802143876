"""An image-folder tree, ``<split>/<class>/<file>``, in a ``.zip`` archive, local or
remote (read through the cache folder: a zip is read by seeking)."""

from __future__ import annotations

import zipfile
from typing import Iterator

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.sources.base import Indexed, no_options
from tlfs.pipeline.sources.files import digest, display_path, image_id_of, image_path_parts, open_source, safe_member


class ImageFolderZip:
    formats = ("imagefolder-zip",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        no_options(uri, options)
        found, bad = [], []
        checksum = digest(uri, cache_dir)  # a zip is read by seeking, so it is hashed in a pass of its own
        with open_source(uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                safe = safe_member(info.filename)
                parts = image_path_parts(safe or display_path(info.filename))
                if parts is None:
                    continue
                image_id = image_id_of(parts)
                if safe is None:
                    bad.append(Reject(image_id, uri, f"unsafe archive path {info.filename!r}"))
                    continue
                found.append(Entry(image_id, *image_id.split("/")[:2], number, info.filename,
                                   fingerprint=f"crc32:{info.CRC:08x}:{info.file_size}"))  # from the zip's directory
        return Indexed(SourceInfo(uri, "imagefolder-zip", checksum, len(found)), found, bad)

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        with open_source(info.uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
            for e in wanted:
                try:
                    yield e, archive.read(e.member)
                except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
                    yield e, exc
