"""Dataset sources: fsspec URIs read as streams into an index of images, then payloads.

Two formats:

* an image-folder tree, ``<split>/<class>/<file>``, as a directory or a ``.tar``,
  ``.tar.gz``/``.tgz`` or ``.zip`` archive, local or remote;
* the canonical CIFAR-10 python tarball (``cifar-10-batches-py/``), checksum-verified
  before any of its pickles is read, and then read with an unpickler that admits only
  numpy arrays and plain containers.

Building the index streams every source once (names, labels, checksums) without
keeping pixels; :func:`iter_payloads` streams them again for the entries a shard
needs. Several sources merge into one dataset; image ids (``split/class/file``) must
be unique across them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import posixpath
import tarfile
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import fsspec
import numpy as np

from tlfs.pipeline.errors import SourceError

CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_DIR = "cifar-10-batches-py"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Entry:
    """One image of the dataset. ``member`` locates it inside its source."""

    image_id: str
    split: str
    label_name: str
    source: int  # index into DatasetIndex.sources
    member: str


@dataclass(frozen=True)
class Reject:
    image_id: str
    source: str
    reason: str


@dataclass
class SourceInfo:
    uri: str
    format: str  # imagefolder-dir | imagefolder-tar | imagefolder-zip | cifar10-python
    checksum: dict[str, str]  # {"sha256": ..., "md5": ...} of the archive, or of a directory's listing
    images: int = 0


@dataclass
class DatasetIndex:
    name: str
    sources: list[SourceInfo]
    classes: list[str]
    entries: list[Entry]  # in source streaming order
    rejects: list[Reject] = field(default_factory=list)  # refused while indexing (unsafe paths, links)

    def splits(self) -> list[str]:
        return sorted({e.split for e in self.entries})

    def label_of(self, name: str) -> int:
        return self.classes.index(name)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "sources": [asdict(s) for s in self.sources],
            "classes": self.classes,
            "entries": [[e.image_id, e.split, e.label_name, e.source, e.member] for e in self.entries],
            "rejects": [asdict(r) for r in self.rejects],
        }

    @classmethod
    def from_json(cls, data: dict) -> "DatasetIndex":
        return cls(
            name=data["name"],
            sources=[SourceInfo(**s) for s in data["sources"]],
            classes=list(data["classes"]),
            entries=[Entry(*row) for row in data["entries"]],
            rejects=[Reject(**r) for r in data["rejects"]],
        )


# ---------------------------------------------------------------- opening sources


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


def _open(uri: str, cache_dir: str | None):
    """Open a file URI for streaming; remote files go through fsspec's local cache so
    the index pass and the payload pass download once."""
    fs, path = fsspec.core.url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols and cache_dir:
        return fsspec.open(f"simplecache::{uri}", "rb", simplecache={"cache_storage": cache_dir}).open()
    return fs.open(path, "rb")


class _HashingReader(io.RawIOBase):
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


def _safe_member(name: str) -> str | None:
    """Normalised relative member path, or None when it escapes (``..``, absolute)."""
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm in (".", ""):
        return None
    return norm


def _display_path(name: str) -> str:
    """An unsafe member name with its escaping prefix dropped, to name it in a reject."""
    norm = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    while norm.startswith("../"):
        norm = norm[3:]
    return norm


def _image_id(parts: tuple[str, str, str]) -> str:
    """``split/class/file``; bytes of a name that are not UTF-8 (kept by Python as
    surrogates) are written as ``\\xNN`` so that the id is valid text everywhere."""
    text = "/".join(parts)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _image_path_parts(path: str) -> tuple[str, str, str] | None:
    """``split/class/file`` of an image path, or None for something that is not an image
    at that depth (a README, a folder, a deeper tree)."""
    parts = path.split("/")
    if len(parts) != 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES) or parts[2].startswith("."):
        return None
    return parts[0], parts[1], parts[2]


def _detect_format(uri: str, fs, path: str) -> str:
    if fs.isdir(path):
        return "imagefolder-dir"
    lower = path.lower()
    if lower.endswith(".zip"):
        return "imagefolder-zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"  # image folder or CIFAR python: decided from its members
    raise SourceError(f"{uri}: not a directory, .tar, .tar.gz, .tgz or .zip")


# ---------------------------------------------------------------- index


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
        _verify_expected(uri, info, expected)
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


def _verify_expected(uri: str, info: SourceInfo, expected: dict[str, str]) -> None:
    for algo, value in expected.items():
        actual = info.checksum.get(algo)
        if actual != value:
            raise SourceError(f"{uri}: {algo} checksum {actual} does not match the expected {value}")


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
        parts = _image_path_parts(rel)
        if parts is None:
            continue
        image_id = _image_id(parts)
        if info.get("islink") or (hasattr(fs, "islink") and fs.islink(full)):
            bad.append(Reject(image_id, uri, "symbolic link (not followed)"))
            continue
        found.append(Entry(image_id, *image_id.split("/")[:2], number, full))
    return SourceInfo(uri, "imagefolder-dir", {"listing_sha256": listing.hexdigest()}, len(found)), found, bad


def _index_zip(uri: str, number: int, cache_dir: str | None):
    found, bad = [], []
    digest = _digest(uri, cache_dir)  # a zip is read by seeking, so it is hashed in a pass of its own
    with _open(uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            safe = _safe_member(info.filename)
            parts = _image_path_parts(safe or _display_path(info.filename))
            if parts is None:
                continue
            image_id = _image_id(parts)
            if safe is None:
                bad.append(Reject(image_id, uri, f"unsafe archive path {info.filename!r}"))
                continue
            found.append(Entry(image_id, *image_id.split("/")[:2], number, info.filename))
    return SourceInfo(uri, "imagefolder-zip", digest, len(found)), found, bad


def _digest(uri: str, cache_dir: str | None) -> dict[str, str]:
    with _open(uri, cache_dir) as raw:
        return _HashingReader(raw).drain()


def _index_tar(uri: str, number: int, cache_dir: str | None, expected: dict[str, str]):
    found, bad = [], []
    cifar_members = []
    with _open(uri, cache_dir) as raw:
        reader = _HashingReader(raw)
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|*") as archive:
            for member in archive:
                name = member.name
                if name.split("/")[0].lstrip("./") == CIFAR_DIR or name.startswith(f"./{CIFAR_DIR}"):
                    cifar_members.append(name)
                    continue
                safe = _safe_member(name)
                parts = _image_path_parts(safe or _display_path(name))
                if parts is None:
                    continue
                image_id = _image_id(parts)
                if safe is None:
                    bad.append(Reject(image_id, uri, f"unsafe archive path {name!r}"))
                elif member.issym() or member.islnk():
                    bad.append(Reject(image_id, uri, "link inside archive (not followed)"))
                elif member.isfile():
                    found.append(Entry(image_id, *image_id.split("/")[:2], number, name))
        checksum = reader.drain()
    if cifar_members:
        return _index_cifar(uri, number, cache_dir, checksum, expected)
    return SourceInfo(uri, "imagefolder-tar", checksum, len(found)), found, bad, None


# ---------------------------------------------------------------- CIFAR-10 python format


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what CIFAR batches hold: dicts, lists, bytes, str and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR batch")


def _load_batch(data: bytes) -> dict:
    return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()


def _cifar_trusted(uri: str, checksum: dict[str, str], expected: dict[str, str]) -> None:
    """Pickles are read only from an archive whose checksum is the official one, or the
    one the user gave with the URI (``#md5=`` / ``#sha256=``)."""
    if expected:
        return  # verified by build_index against what the user gave
    if checksum["md5"] != CIFAR10_MD5:
        raise SourceError(
            f"{uri}: CIFAR-10 python archive with md5 {checksum['md5']}, not the official {CIFAR10_MD5}; "
            "its pickles are not read. If you trust this file, give its checksum: URI#md5=HEX"
        )


def _cifar_batches(uri: str, cache_dir: str | None) -> Iterator[tuple[str, dict]]:
    with _open(uri, cache_dir) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            base = posixpath.basename(member.name)
            if member.isfile() and (base.startswith("data_batch_") or base in ("test_batch", "batches.meta")):
                yield base, _load_batch(archive.extractfile(member).read())


def _index_cifar(uri: str, number: int, cache_dir: str | None, checksum: dict[str, str], expected: dict[str, str]):
    _cifar_trusted(uri, checksum, expected)
    if expected:
        _verify_expected(uri, SourceInfo(uri, "cifar10-python", checksum), expected)
    found = []
    classes = None
    batches = []
    for base, batch in _cifar_batches(uri, cache_dir):
        if base == "batches.meta":
            classes = [n.decode() for n in batch[b"label_names"]]
        else:
            batches.append((base, batch))
    if classes is None:
        raise SourceError(f"{uri}: CIFAR-10 archive without batches.meta")
    for base, batch in sorted(batches, key=lambda b: b[0]):
        split = "test" if base == "test_batch" else "train"
        for row, (label, filename) in enumerate(zip(batch[b"labels"], batch[b"filenames"])):
            name = classes[label]
            found.append(Entry(f"{split}/{name}/{filename.decode()}", split, name, number, f"{base}:{row}"))
    return SourceInfo(uri, "cifar10-python", checksum, len(found)), found, [], classes


# ---------------------------------------------------------------- selection


def select_splits(index: DatasetIndex, splits: list[str]) -> DatasetIndex:
    missing = [s for s in splits if s not in index.splits()]
    if missing:
        raise SourceError(f"dataset {index.name!r} has no split {', '.join(missing)}; it has {', '.join(index.splits())}")
    keep = set(splits)
    return DatasetIndex(
        index.name,
        index.sources,
        index.classes,
        [e for e in index.entries if e.split in keep],
        [r for r in index.rejects if r.image_id.split("/")[0] in keep],
    )


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
    kept_rejects = [r for r in index.rejects if r.image_id in keep]
    return DatasetIndex(index.name, index.sources, index.classes, [e for e in index.entries if e.image_id in keep], kept_rejects)


# ---------------------------------------------------------------- payloads


def iter_payloads(index: DatasetIndex, entries: list[Entry], cache_dir: str | None = None) -> Iterator[tuple[Entry, bytes | np.ndarray | Exception]]:
    """Yield ``(entry, payload)`` for ``entries`` in source order. A payload is the
    image file's bytes, a decoded HxWx3 array (CIFAR), or the exception that kept it
    from being read (recorded as a reject by the caller, never lost)."""
    by_source: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        by_source[e.source].append(e)
    for number in sorted(by_source):
        info = index.sources[number]
        wanted = by_source[number]
        if info.format == "imagefolder-dir":
            yield from _dir_payloads(info.uri, wanted)
        elif info.format == "imagefolder-zip":
            yield from _zip_payloads(info.uri, wanted, cache_dir)
        elif info.format == "imagefolder-tar":
            yield from _tar_payloads(info.uri, wanted, cache_dir)
        else:
            yield from _cifar_payloads(info, wanted, cache_dir)


def _dir_payloads(uri: str, wanted: list[Entry]):
    fs, _ = fsspec.core.url_to_fs(uri)
    for e in wanted:
        try:
            with fs.open(e.member, "rb") as f:
                yield e, f.read()
        except OSError as exc:
            yield e, exc


def _zip_payloads(uri: str, wanted: list[Entry], cache_dir: str | None):
    with _open(uri, cache_dir) as raw, zipfile.ZipFile(raw) as archive:
        for e in wanted:
            try:
                yield e, archive.read(e.member)
            except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
                yield e, exc


def _tar_payloads(uri: str, wanted: list[Entry], cache_dir: str | None):
    pending = {e.member: e for e in wanted}
    try:
        with _open(uri, cache_dir) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
            for member in archive:
                e = pending.pop(member.name, None)
                if e is None:
                    continue
                try:
                    yield e, archive.extractfile(member).read()
                except (OSError, tarfile.TarError) as exc:
                    yield e, exc
                if not pending:
                    return
    except (OSError, tarfile.TarError, EOFError) as exc:
        for e in pending.values():
            yield e, exc
        return
    for e in pending.values():
        yield e, SourceError(f"{e.member} vanished from {uri}")


def _cifar_payloads(info: SourceInfo, wanted: list[Entry], cache_dir: str | None):
    rows: dict[str, list[tuple[int, Entry]]] = defaultdict(list)
    for e in wanted:
        base, row = e.member.split(":")
        rows[base].append((int(row), e))
    # Verified again before unpickling: the file may have changed since it was indexed.
    if _digest(info.uri, cache_dir)["sha256"] != info.checksum["sha256"]:
        raise SourceError(f"{info.uri}: changed since it was indexed (sha256 differs); its pickles are not read")
    for base, batch in _cifar_batches(info.uri, cache_dir):
        for row, e in rows.get(base, ()):
            flat = batch[b"data"][row]
            yield e, flat.reshape(3, 32, 32).transpose(1, 2, 0).copy()
