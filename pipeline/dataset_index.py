"""A dataset's index: its images (:class:`Entry`: id, split, class, source, member),
its sources with their checksums, the entries refused while indexing, and the
class-balanced sample and split selection a request asks for."""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

from tlfs.pipeline.errors import SourceError


@dataclass(frozen=True)
class Entry:
    """One image of the dataset. ``member`` locates it inside its source."""

    image_id: str
    split: str
    label_name: str
    source: int  # index into DatasetIndex.sources
    member: str
    # where the bytes start in a tar's stream (an uncompressed tar's file, a compressed
    # one's decompressed bytes), as indexing found them; else -1
    offset: int = -1
    size: int = -1
    # the image's content as its source knows it (a hash of its bytes, a zip's CRC, an
    # object's ETag, a file's size and mtime): an incremental run re-extracts an image
    # only if this changed (pipeline/incremental.py); "" where the source gives none
    fingerprint: str = ""

    ROW_FIELDS_WITH_FINGERPRINT = 8  # a row of to_row() that carries the fingerprint incremental runs compare

    def to_row(self) -> list:
        row = [self.image_id, self.split, self.label_name, self.source, self.member]
        if self.fingerprint:
            return row + [self.offset, self.size, self.fingerprint]
        return row + [self.offset, self.size] if self.offset >= 0 else row


def label_numbers(classes: list[str]) -> dict[str, int]:
    """Each class's label: its place in the dataset's class list (the one rule, for an index
    and a plan; a dict, since the writer looks up every image's)."""
    return {name: number for number, name in enumerate(classes)}


@dataclass(frozen=True)
class Reject:
    image_id: str
    source: str
    reason: str


@dataclass
class SourceInfo:
    uri: str
    format: str  # a key of pipeline/sources.SOURCES
    checksum: dict[str, str]  # {"sha256": ..., "md5": ...} of the file, or of a directory's listing
    images: int = 0
    options: dict[str, str] = field(default_factory=dict)  # given with the URI (#split=..., #image=...)
    # a tar's compression as indexing found it ("tar": none; "gz", "bz2", "xz"); None for
    # other formats, and for a tar indexed before it was recorded (then only an
    # uncompressed tar's members carry offsets)
    compression: str | None = None


@dataclass
class DatasetIndex:
    name: str
    sources: list[SourceInfo]
    classes: list[str]
    entries: list[Entry]  # in source streaming order
    rejects: list[Reject] = field(default_factory=list)  # refused while indexing (unsafe paths, links)
    # the sources' image files not at <split>/<class>/<file> depth, not in the dataset (Indexed.left_out)
    left_out: list[str] = field(default_factory=list)
    repeated_rows: int = 0  # a CSV's rows that list an image again with its label (Indexed.repeated_rows)

    def splits(self) -> list[str]:
        return sorted({e.split for e in self.entries})

    def label_of(self, name: str) -> int:
        return self._labels[name]

    @functools.cached_property
    def _labels(self) -> dict[str, int]:
        return label_numbers(self.classes)

    def identity(self) -> dict:
        """What identifies the indexed images: the sources' checksums and every image id, in order."""
        ids = "\n".join(e.image_id for e in self.entries).encode("utf-8", "surrogateescape")
        return {"sources": [s.checksum for s in self.sources], "ids": hashlib.sha256(ids).hexdigest()}

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "sources": [asdict(s) for s in self.sources],
            "classes": self.classes,
            "entries": [e.to_row() for e in self.entries],
            "rejects": [asdict(r) for r in self.rejects],
            "left_out": self.left_out,
            **({"repeated_rows": self.repeated_rows} if self.repeated_rows else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> "DatasetIndex":
        return cls(
            name=data["name"],
            sources=[SourceInfo(**s) for s in data["sources"]],
            classes=list(data["classes"]),
            entries=[Entry(*row) for row in data["entries"]],
            rejects=[Reject(**r) for r in data["rejects"]],
            left_out=list(data.get("left_out", [])),
            repeated_rows=int(data.get("repeated_rows", 0)),
        )


def select_splits(index: DatasetIndex, splits: list[str]) -> DatasetIndex:
    missing = [s for s in splits if s not in index.splits()]
    if missing:
        raise SourceError(f"dataset {index.name!r} has no split {', '.join(missing)}; it has {', '.join(index.splits())}")
    keep = set(splits)
    return replace(index, entries=[e for e in index.entries if e.split in keep],
                   rejects=[r for r in index.rejects if r.image_id.split("/")[0] in keep])


def _stable_rank(image_id: str) -> str:
    return hashlib.sha1(image_id.encode("utf-8", "surrogateescape")).hexdigest()


def sample(index: DatasetIndex, limit: int) -> DatasetIndex:
    """A deterministic, class-balanced sample of ``limit`` images per split: the same
    ids whatever the source order, as each class keeps the ids of lowest hash."""
    if limit <= 0:
        raise SourceError("--limit must be a positive number of images per split")
    by_split_class: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in index.entries:
        by_split_class[(e.split, e.label_name)].append(e)
    keep: set[str] = set()
    for split in index.splits():
        classes = sorted(c for (s, c) in by_split_class if s == split)
        quota = {c: limit // len(classes) + (1 if i < limit % len(classes) else 0) for i, c in enumerate(classes)}
        for c in classes:
            ranked = sorted(by_split_class[(split, c)], key=lambda e: _stable_rank(e.image_id))
            keep.update(e.image_id for e in ranked[: quota[c]])
    return replace(index, entries=[e for e in index.entries if e.image_id in keep],
                   rejects=[r for r in index.rejects if r.image_id in keep])
