"""An image-folder tree, ``<split>/<class>/<file>`` (or ``<class>/<file>`` with its split
given), in a ``.zip`` archive, local or
remote (read through the cache folder: a zip is read by seeking)."""

from __future__ import annotations

import zipfile
from typing import Iterator

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.sources.base import Indexed
from tlfs.pipeline.sources.hashing import digest
from tlfs.pipeline.sources.paths import (display_path, left_out, member_image, safe_member, tree_split, unsafe, within,
                                         wrapper_folder)
from tlfs.pipeline.sources.reading import open_source


# The compression methods Python's zipfile reads (Zstandard from Python 3.14 on); the names of
# others that zips in the wild use, for the reason an image of such a zip is refused with
READ_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA,
                *([zipfile.ZIP_ZSTANDARD] if hasattr(zipfile, "ZIP_ZSTANDARD") else [])}
METHOD_NAMES = {9: "Deflate64 (as Windows Explorer compresses large files)", 93: "Zstandard", 95: "xz", 98: "PPMd",
                99: "AES encryption"}


def unread_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read, known from the zip's directory: a password, or a
    compression method zipfile does not read; None where it can be."""
    if info.flag_bits & 0x1:
        return "encrypted (the zip has a password): to be zipped again without one"
    if info.compress_type not in READ_METHODS:
        method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        return (f"compressed with {method}, which Python's zipfile does not read: to be zipped again with Deflate "
                "(zip -r, or 7-Zip's Deflate)")
    return None


class ImageFolderZip:
    formats = ("imagefolder-zip",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        split = tree_split(uri, options)
        found, bad, misplaced = [], [], []
        checksum = digest(uri, cache_dir)  # a zip is read by seeking, so it is hashed in a pass of its own
        with open_source(uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
            files = [info for info in archive.infolist() if not info.is_dir()]
            # pets/train/cats/1.jpg: the folder zip -r puts the tree in
            wrapper = wrapper_folder([safe_member(posix_name(info)) or display_path(info.filename) for info in files],
                                     split)
            for info in files:
                image_id, safe = member_image(posix_name(info), wrapper, split)
                if image_id is None:
                    if left_out(within(safe or display_path(info.filename), wrapper), split):
                        misplaced.append(f"{uri}: {info.filename}")
                    continue
                if safe is None:
                    bad.append(unsafe(image_id, uri, info.filename))
                    continue
                if (why := unread_member(info)) is not None:
                    bad.append(Reject(image_id, uri, f"{info.filename}: {why}"))
                    continue
                found.append(Entry(image_id, *image_id.split("/")[:2], number, info.filename,
                                   fingerprint=f"crc32:{info.CRC:08x}:{info.file_size}"))  # from the zip's directory
        return Indexed(SourceInfo(uri, "imagefolder-zip", checksum, len(found), dict(options)), found, bad, left_out=misplaced)

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        with open_source(info.uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
            for e in wanted:
                try:
                    yield e, archive.read(e.member)
                except (OSError, zipfile.BadZipFile, KeyError, EOFError, NotImplementedError, RuntimeError) as exc:
                    yield e, Unreadable.of(exc)  # NotImplementedError, RuntimeError: a method, a password


def posix_name(info: zipfile.ZipInfo) -> str:
    """A member's name with backslashes read as folder separators, as unzip and 7-Zip read the
    zips some Windows tools write (.NET Framework before 4.6.1, PowerShell 5's Compress-Archive):
    ``train\\cats\\1.jpg`` is ``train/cats/1.jpg``, and ``..\\x.jpg`` still escapes. The member
    is read by its own name."""
    return info.filename.replace("\\", "/")
