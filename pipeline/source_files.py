"""Reading source files safely: checksums given with a URI, streams (remote ones cached
once), digests of what was read, and archive member names that cannot escape."""

from __future__ import annotations

import hashlib
import io
import posixpath

import fsspec

from tlfs.features.storage import is_local
from tlfs.pipeline.dataset_index import SourceInfo
from tlfs.pipeline.errors import SourceError


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def split_checksum(uri: str) -> tuple[str, dict[str, str]]:
    """``path#md5=...`` or ``#sha256=...``: an expected checksum given with the URI."""
    if "#" not in uri:
        return uri, {}
    base, fragment = uri.rsplit("#", 1)
    expected = {}
    for part in fragment.split("&"):
        algo, _, value = part.partition("=")
        if algo not in ("md5", "sha256") or not value:
            raise SourceError(f"{uri}: unknown checksum fragment {part!r} (use #md5=HEX or #sha256=HEX)")
        expected[algo] = value.lower()
    return base, expected


def open_source(uri: str, cache_dir: str | None):
    """Open a file URI for streaming; remote files go through fsspec's local cache so
    the index pass and the payload pass download once."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not is_local(fs) and cache_dir:
        return fsspec.open(f"simplecache::{uri}", "rb", simplecache={"cache_storage": cache_dir}).open()
    return fs.open(path, "rb")


class HashingReader(io.RawIOBase):
    """Wraps a binary stream; digests everything read through it."""

    def __init__(self, raw):
        self.raw = raw
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        self.md5.update(data)
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> dict[str, str]:
        """Read (and digest) whatever the consumer left, then return the digests."""
        while block := self.raw.read(1 << 20):
            self.md5.update(block)
            self.sha256.update(block)
        return {"md5": self.md5.hexdigest(), "sha256": self.sha256.hexdigest()}


def digest(uri: str, cache_dir: str | None) -> dict[str, str]:
    with open_source(uri, cache_dir) as raw:
        return HashingReader(raw).drain()


def safe_member(name: str) -> str | None:
    """Normalised relative member path, or None when it escapes (``..``, absolute)."""
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm in (".", ""):
        return None
    return norm


def display_path(name: str) -> str:
    """An unsafe member name with its escaping prefix dropped, to name it in a reject."""
    norm = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    while norm.startswith("../"):
        norm = norm[3:]
    return norm


def image_id_of(parts: tuple[str, str, str]) -> str:
    """``split/class/file``; bytes of a name that are not UTF-8 (kept by Python as
    surrogates) are written as ``\\xNN`` so that the id is valid text everywhere."""
    text = "/".join(parts)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def image_path_parts(path: str) -> tuple[str, str, str] | None:
    """``split/class/file`` of an image path, or None for something that is not an image
    at that depth (a README, a folder, a deeper tree)."""
    parts = path.split("/")
    if len(parts) != 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES) or parts[2].startswith("."):
        return None
    return parts[0], parts[1], parts[2]


def verify_expected(uri: str, info: SourceInfo, expected: dict[str, str]) -> None:
    for algo, value in expected.items():
        actual = info.checksum.get(algo)
        if actual != value:
            raise SourceError(f"{uri}: {algo} checksum {actual} does not match the expected {value}")
