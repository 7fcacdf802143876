"""Dataset sources: fsspec URIs read as streams into an index of images, then payloads.

Two formats:

* an image-folder tree, ``<split>/<class>/<file>``, as a directory or a ``.tar``,
  ``.tar.gz``/``.tgz`` or ``.zip`` archive, local or remote;
* the canonical CIFAR-10 python tarball (pipeline/cifar.py).

The index's types and sampling are in pipeline/dataset_index.py; checksums, streams and
safe member names in pipeline/source_files.py.

Building the index streams every source once (names, labels, checksums) without
keeping pixels; :func:`iter_payloads` streams them again for the entries a shard
needs. Several sources merge into one dataset; image ids (``split/class/file``) must
be unique across them.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections import defaultdict
from typing import Iterable, Iterator

import fsspec
import numpy as np

from tlfs.pipeline.cifar import CIFAR_DIR, cifar_payloads, index_cifar
from tlfs.pipeline.dataset_index import DatasetIndex, Entry, Reject, SourceInfo, sample, select_splits
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.source_files import (HashingReader, digest, display_path, image_id_of, image_path_parts, open_source,
                                        safe_member, split_checksum, verify_expected)


def _detect_format(uri: str, fs, path: str) -> str:
    if fs.isdir(path):
        return "imagefolder-dir"
    lower = path.lower()
    if lower.endswith(".zip"):
        return "imagefolder-zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"  # image folder or CIFAR python: decided from its members
    raise SourceError(f"{uri}: not a directory, .tar, .tar.gz, .tgz or .zip")


def build_index(
    name: str,
    uris: Iterable[str],
    splits: Iterable[str] | None = None,
    limit: int | None = None,
    cache_dir: str | None = None,
) -> DatasetIndex:
    """Stream every source once and list its images; optionally keep only ``splits``
    and a class-balanced sample of ``limit`` images per split."""
    uris = list(uris)
    if not uris:
        raise SourceError(f"dataset {name!r} has no source: give --source URI")
    sources: list[SourceInfo] = []
    entries: list[Entry] = []
    rejects: list[Reject] = []
    class_order: list[str] | None = None
    for number, raw_uri in enumerate(uris):
        uri, expected = split_checksum(raw_uri)
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            if not fs.exists(path):
                raise SourceError(f"{uri}: no such file or directory")
            fmt = _detect_format(uri, fs, path)
            if fmt == "imagefolder-dir":
                info, found, bad = _index_dir(uri, fs, path, number)
            elif fmt == "imagefolder-zip":
                info, found, bad = _index_zip(uri, number, cache_dir)
            else:
                info, found, bad, cifar_classes = _index_tar(uri, number, cache_dir, expected)
                if cifar_classes:
                    class_order = cifar_classes
        except SourceError:
            raise
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            raise SourceError(f"{uri}: cannot read ({type(exc).__name__}: {exc})") from exc
        verify_expected(uri, info, expected)
        sources.append(info)
        entries.extend(found)
        rejects.extend(bad)
    _check_unique(entries, sources)
    if not entries:
        raise SourceError(f"dataset {name!r}: no images found in {', '.join(uris)} (expected <split>/<class>/<image>)")
    classes = class_order or sorted({e.label_name for e in entries})
    index = DatasetIndex(name, sources, classes, entries, rejects)
    if splits:
        index = select_splits(index, list(splits))
    if limit:
        index = sample(index, limit)
    return index


def _check_unique(entries: list[Entry], sources: list[SourceInfo]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        if e.image_id in seen:
            first = sources[seen[e.image_id]].uri
            raise SourceError(f"image {e.image_id} is in two sources: {first} and {sources[e.source].uri}")
        seen[e.image_id] = e.source


def _index_dir(uri: str, fs, root: str, number: int):
    found, bad = [], []
    listing = hashlib.sha256()
    root = root.rstrip("/")
    details = fs.find(root, withdirs=False, detail=True)
    for full in sorted(details):
        rel = full[len(root) + 1 :]
        info = details[full]
        listing.update(f"{rel}\0{info.get('size')}\n".encode("utf-8", "surrogateescape"))
        parts = image_path_parts(rel)
        if parts is None:
            continue
        image_id = image_id_of(parts)
        if info.get("islink") or (hasattr(fs, "islink") and fs.islink(full)):
            bad.append(Reject(image_id, uri, "symbolic link (not followed)"))
            continue
        found.append(Entry(image_id, *image_id.split("/")[:2], number, full))
    return SourceInfo(uri, "imagefolder-dir", {"listing_sha256": listing.hexdigest()}, len(found)), found, bad


def _index_zip(uri: str, number: int, cache_dir: str | None):
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
            found.append(Entry(image_id, *image_id.split("/")[:2], number, info.filename))
    return SourceInfo(uri, "imagefolder-zip", checksum, len(found)), found, bad


def _index_tar(uri: str, number: int, cache_dir: str | None, expected: dict[str, str]):
    found, bad = [], []
    cifar_members = []
    with open_source(uri, cache_dir) as raw:
        reader = HashingReader(raw)
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|*") as archive:
            for member in archive:
                name = member.name
                if name.split("/")[0].lstrip("./") == CIFAR_DIR or name.startswith(f"./{CIFAR_DIR}"):
                    cifar_members.append(name)
                    continue
                safe = safe_member(name)
                parts = image_path_parts(safe or display_path(name))
                if parts is None:
                    continue
                image_id = image_id_of(parts)
                if safe is None:
                    bad.append(Reject(image_id, uri, f"unsafe archive path {name!r}"))
                elif member.issym() or member.islnk():
                    bad.append(Reject(image_id, uri, "link inside archive (not followed)"))
                elif member.isfile():
                    found.append(Entry(image_id, *image_id.split("/")[:2], number, name))
        checksum = reader.drain()
    if cifar_members:
        return index_cifar(uri, number, cache_dir, checksum, expected)
    return SourceInfo(uri, "imagefolder-tar", checksum, len(found)), found, bad, None


# ---------------------------------------------------------------- payloads


def iter_payloads(index: DatasetIndex, entries: list[Entry], cache_dir: str | None = None,
                  streams: "TarStreams | None" = None) -> Iterator[tuple[Entry, bytes | np.ndarray | Exception]]:
    """Yield ``(entry, payload)`` for ``entries`` in source order. A payload is the
    image file's bytes, a decoded HxWx3 array (CIFAR), or the exception that kept it
    from being read (recorded as a reject by the caller, never lost). ``streams``: tar
    archives kept open across calls (a run's consecutive shards read an archive once);
    without it, the archives this call opens are closed at its end."""
    by_source: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        by_source[e.source].append(e)
    own = streams is None
    streams = TarStreams() if own else streams
    try:
        for number in sorted(by_source):
            info = index.sources[number]
            wanted = by_source[number]
            if info.format == "imagefolder-dir":
                yield from _dir_payloads(info.uri, wanted)
            elif info.format == "imagefolder-zip":
                yield from _zip_payloads(info.uri, wanted, cache_dir)
            elif info.format == "imagefolder-tar":
                yield from streams.payloads(info.uri, wanted, cache_dir)
            else:
                yield from cifar_payloads(info, wanted, cache_dir)
    finally:
        if own:
            streams.close()


class TarStreams:
    """Tar archives kept open between calls. An archive streams in one direction (and a
    compressed one cannot seek), so a call whose members all lie ahead of where the last
    call stopped continues the same stream; any other call opens the archive again. Shards
    are contiguous runs of the index, which follows each archive's order, so the shards
    of a run read each archive once instead of once per shard."""

    def __init__(self) -> None:
        self._open: dict[str, _TarStream] = {}

    def payloads(self, uri: str, wanted: list[Entry], cache_dir: str | None):
        stream = self._open.get(uri)
        if stream is None or stream.broken or any(e.member in stream.passed for e in wanted):
            if stream is not None:
                stream.close()
                del self._open[uri]
            try:
                stream = self._open[uri] = _TarStream(uri, cache_dir)
            except (OSError, tarfile.TarError, EOFError) as exc:
                for e in wanted:
                    yield e, exc
                return
        yield from stream.take(wanted)

    def close(self) -> None:
        for stream in self._open.values():
            stream.close()
        self._open.clear()


class _TarStream:
    def __init__(self, uri: str, cache_dir: str | None) -> None:
        self.uri = uri
        self.passed: set[str] = set()  # members already streamed past
        self.broken = False
        self._raw = open_source(uri, cache_dir)
        self._archive = tarfile.open(fileobj=self._raw, mode="r|*")
        self._members = iter(self._archive)

    def take(self, wanted: list[Entry]):
        pending = {e.member: e for e in wanted}
        try:
            for member in self._members:
                self.passed.add(member.name)
                e = pending.pop(member.name, None)
                if e is None:
                    continue
                try:
                    yield e, self._archive.extractfile(member).read()
                except (OSError, tarfile.TarError) as exc:
                    yield e, exc
                if not pending:
                    return
        except (OSError, tarfile.TarError, EOFError) as exc:
            self.broken = True
            for e in pending.values():
                yield e, exc
            return
        for e in pending.values():
            yield e, SourceError(f"{e.member} vanished from {self.uri}")

    def close(self) -> None:
        self._archive.close()
        self._raw.close()


def _dir_payloads(uri: str, wanted: list[Entry]):
    fs, _ = fsspec.core.url_to_fs(uri)
    for e in wanted:
        try:
            with fs.open(e.member, "rb") as f:
                yield e, f.read()
        except OSError as exc:
            yield e, exc


def _zip_payloads(uri: str, wanted: list[Entry], cache_dir: str | None):
    with open_source(uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
        for e in wanted:
            try:
                yield e, archive.read(e.member)
            except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
                yield e, exc
