"""Digests of what was read: a source's checksums (taken as it streams, checked against
the ones its URI gives) and each image's fingerprint (what incremental runs compare)."""

from __future__ import annotations

import hashlib
import io

from tlfs.pipeline.dataset_index import SourceInfo
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.reading import open_source

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


def fingerprint_bytes(data: bytes) -> str:
    """An image's fingerprint from its bytes (BLAKE2b, 96 bits: fast, and collisions
    among a dataset's images are out of reach)."""
    return "b2:" + hashlib.blake2b(data, digest_size=12).hexdigest()


def fingerprint_info(info: dict) -> str:
    """A file's fingerprint from its listing, without reading it: the object store's
    ETag where there is one, else size and modification time (rsync's quick check)."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    return f"stat:{info.get('size')}:{mtime}"


def digest(uri: str, cache_dir: str | None) -> dict[str, str]:
    with open_source(uri, cache_dir) as raw:
        return HashingReader(raw).drain()


def verify_expected(uri: str, info: SourceInfo, expected: dict[str, str]) -> None:
    for algo, value in expected.items():
        actual = info.checksum.get(algo)
        if actual != value:
            raise SourceError(f"{uri}: {algo} checksum {actual} does not match the expected {value}")
