"""The interface every source format implements (one class per format, in this folder):

* ``formats``: the ``SourceInfo.format`` names it reads;
* ``index(uri, number, options, cache_dir, expected)``: list the images of one file or
  folder, as :class:`Indexed` (``number``: the source's place in the dataset);
* ``payloads(info, wanted, cache_dir, archives)``: yield ``(entry, payload)`` for the
  ``wanted`` entries of that source, in their order; a payload is the image's encoded
  bytes, decoded pixels (CIFAR), or :class:`tlfs.pipeline.image_decode.Unreadable`, why it
  could not be read (the caller records it as a reject). ``archives``: compressed archives kept open across
  calls (:class:`tlfs.pipeline.sources.tar.OpenArchives`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.image_decode import Unreadable


@dataclass
class Indexed:
    info: SourceInfo
    entries: list[Entry]
    rejects: list[Reject] = field(default_factory=list)
    classes: list[str] | None = None  # label order where the source fixes it (CIFAR's meta, int labels)
    # image files not at <split>/<class>/<file> depth, which the dataset leaves out, each named for a
    # reader ("folder/a/b/c/x.jpg", "archive.zip: a/b/c/x.jpg"); planning names them
    left_out: list[str] = field(default_factory=list)


class Source(Protocol):
    formats: tuple[str, ...]

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed: ...

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None,
                 archives) -> Iterator[tuple[Entry, object]]: ...


def unreadable(entries, error: BaseException) -> Iterator[tuple[Entry, Unreadable]]:
    """One read error, the payload of each of ``entries`` (a file or archive that failed
    as a whole takes all its images with it, each recorded as a reject)."""
    for entry in entries:
        yield entry, Unreadable.of(error)


def located(member) -> tuple[int, int]:
    """Where a tar member's bytes lie in the tar's stream (``tarfile.TarInfo``): offset and
    size; (-1, -1) for a sparse member, whose bytes are not in one piece (then read
    through tarfile, by name)."""
    return (-1, -1) if member.issparse() else (member.offset_data, member.size)


def int_class_order(entries: list[Entry]) -> list[str] | None:
    """Integer labels fix the class order: class ``k`` is label ``k``."""
    names = {e.label_name for e in entries}
    if names and all(n.isdigit() for n in names):
        return [str(k) for k in range(max(int(n) for n in names) + 1)]
    return None
