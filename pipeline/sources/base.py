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
from tlfs.pipeline.errors import SourceError
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
    # rows of a table that list an image again with the same label and split (a row a box or an
    # annotation, as detection datasets keep their labels): one image, counted once; planning says so
    repeated_rows: int = 0
    # a few files without a suffix, as scanners export DICOM files: looked into only where the
    # dataset has no images, to say what they are
    suffixless: list[str] = field(default_factory=list)


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


def named_column(uri: str, columns: list[str], given: str | None, candidates: tuple[str, ...], what: str) -> str:
    """A table's ``what`` column (a Parquet table's, a CSV's): the one ``given`` with the
    source, else the first of ``candidates`` the table has."""
    if given:
        if given not in columns:
            raise SourceError(f"{uri}: no {what} column {given!r} (columns: {', '.join(columns)})")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise SourceError(f"{uri}: no {what} column among {', '.join(columns)}: name it with the source "
                      f"({uri}#{what}=COLUMN)")


def table_split(uri: str, columns: list[str], options: dict[str, str], named_like: str) -> tuple[str | None, str | None]:
    """``(split column, split)`` of a table of images: its split column (``#split_column=``,
    or one named ``split``), else the split given with the source (``#split=``), named by the
    file (``named_like``, an example), or ``train`` where a test split is to be held out."""
    from tlfs.pipeline.sources.paths import split_from_path

    split_column = options.get("split_column") or ("split" if "split" in columns else None)
    if split_column and split_column not in columns:
        raise SourceError(f"{uri}: no split column {split_column!r} (columns: {', '.join(columns)})")
    split = options.get("split") or split_from_path(uri) or ("train" if "holdout" in options else None)
    if not split_column and not split:
        raise SourceError(f"{uri}: no split: give it with the source ({uri}#split=NAME), name a split column "
                          f"(#split_column=NAME), or name the file after its split ({named_like})")
    return split_column, split
