"""Tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``), local or
remote, holding either an image-folder tree (``split/class/file``, or ``class/file`` with its
split given: pipeline/sources/paths.py) or WebDataset samples
(pipeline/sources/webdataset.py); the CIFAR-10 python tarball is recognised by its
members and handed to pipeline/sources/cifar.py.

Indexing streams the archive once (names, labels, checksum, and where each member's
bytes lie in the tar's stream), by its headers (pipeline/sources/tar_headers.py: a
fifth of tarfile's cost; an archive in a form it leaves to tarfile is read again
through tarfile). Reading then takes each member at
that offset, without parsing the archive again (tarfile's header parsing cost 16 µs
an image, most of what reading CIFAR-10's archive cost):

* an uncompressed tar is read **by range**: a shard reads only its own members' bytes
  (a batched ranged ``cat`` on an object store), never the rest of the archive;
* a compressed one can only be decompressed from its start: :class:`OpenArchives`
  keeps it open, so the consecutive shards of a run continue one stream instead of
  starting again, and each member is sliced out of the decompressed bytes after its
  own header is checked (its name and size: an archive that changed since it was
  indexed gives a clear reject, never another member's bytes).

A shard with a member that has no offset is streamed through tarfile by member name:
a compressed tar indexed before offsets were recorded, or a sparse member (GNU tar's
``--sparse``: its bytes are not in one piece).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from typing import Iterator

from tlfs.features.storage import is_local
from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.sources.base import Indexed, int_class_order, located, unreadable
from tlfs.pipeline.sources.cifar import CIFAR_DIR, index_cifar
from tlfs.pipeline.sources.hashing import HashingReader, fingerprint_bytes
from tlfs.pipeline.sources.paths import (IMAGE_SUFFIXES, UNREAD_SUFFIXES, an_image, given_split, image_id_of,
                                         image_path_parts, left_out, member_image, tree_split, unsafe, within, wrapper_folder)
from tlfs.pipeline.sources.reading import batch_reader, open_source
from tlfs.pipeline.sources.tar_headers import BLOCK, STREAM_ERRORS, Members, Unusual, compression_of
from tlfs.pipeline.sources.webdataset import Samples

RANGES_PER_REQUEST = 256  # ranged reads sent together


class TarArchive:
    formats = ("imagefolder-tar", "webdataset-tar")

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        try:
            return self._indexed(uri, number, options, cache_dir, expected, _Listed(uri, cache_dir, _by_headers))
        except Unusual:  # a form only tarfile reads (tar_headers.py): the archive read again through it
            return self._indexed(uri, number, options, cache_dir, expected, _Listed(uri, cache_dir, _by_tarfile))

    def _indexed(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
                 expected: dict[str, str], listed: "_Listed") -> Indexed:
        found: list[Entry] = []
        bad: list[Reject] = []
        images_elsewhere: list[str] = []  # image members not at split/class/file depth, or not read (safe names)
        # image members one folder deeper, by their first folder: the tree, where `tar czf pets.tar.gz pets`
        # wrapped it in one (pets/train/cats/1.jpg); the archive streams by once, so they are kept as they pass
        deeper: dict[str, list[Entry | Reject]] = {}
        samples = Samples(uri, options)
        # a tree of class/file where the split is given (#split=, #holdout=): then its images are a
        # WebDataset's too, should labels lie beside them (train/0001.jpg with train/0001.cls)
        split = given_split(options)
        cifar = False
        for member, read in listed:
            name = member.name
            if name.split("/")[0].lstrip("./") == CIFAR_DIR or name.startswith(f"./{CIFAR_DIR}"):
                cifar = True
                continue
            image_id, safe = member_image(name, split=split)
            if image_id is None:
                hashed = None  # the member's fingerprint, where it was taken here (a sample's is then the same)
                if safe is not None and an_image(safe, IMAGE_SUFFIXES + UNREAD_SUFFIXES):
                    images_elsewhere.append(safe)
                    top, _, below = safe.partition("/")
                    if an_image(safe) and image_path_parts(below, split):
                        entry = _entry(uri, number, name, image_id_of(image_path_parts(below, split)), member, read)
                        if entry is not None:
                            deeper.setdefault(top, []).append(entry)
                            hashed = entry.fingerprint if isinstance(entry, Entry) else None
                if safe is not None and member.isfile():
                    samples.add(safe, member, read, hashed)
                continue
            entry = unsafe(image_id, uri, name) if safe is None else _entry(uri, number, name, image_id, member, read)
            if isinstance(entry, Entry):
                found.append(entry)
                if split is not None:
                    samples.add(safe, member, read, entry.fingerprint)
            elif entry is not None:
                bad.append(entry)
        checksum, compression = listed.checksum, listed.compression  # the archive read to its end
        labelled = bool(samples.labels or samples.label_errors)
        if split is not None:  # images of a tree of classes, unless a label lies beside one of them
            labelled = any(key in samples.labels or key in samples.label_errors for key in samples.images)
        # the same rule as a folder's and a zip's (paths.wrapper_folder), on the image members one folder deeper
        wrapper = wrapper_folder((f"{top}/{e.image_id.split('/', 1)[1] if split else e.image_id}"
                                  for top, entries in deeper.items() for e in entries), split) \
            if not found and not samples.labels else None
        if wrapper is not None:  # an image-folder tree in one folder: its images, as if it were not there
            found = [e for e in deeper[wrapper] if isinstance(e, Entry)]
            bad += [e for e in deeper[wrapper] if isinstance(e, Reject)]
        if cifar:
            if options:
                raise SourceError(f"{uri}: the CIFAR-10 archive takes no options ({', '.join(sorted(options))})")
            return index_cifar(uri, number, cache_dir, checksum, expected)
        # an image-folder tree: images without a label beside any (with labels, WebDataset samples, but for a
        # tree of split/class/file, whose images are found as such whatever else lies beside them)
        if not labelled or (found and split is None):
            tree_split(uri, options)  # the options an image-folder tree takes, or a clear error
            misplaced = [f"{uri}: {safe}" for safe in images_elsewhere if left_out(within(safe, wrapper), split)]
            return Indexed(SourceInfo(uri, "imagefolder-tar", checksum, len(found), dict(options), compression),
                           found, bad, left_out=misplaced)
        if split is not None:  # the rejects of the class/file reading, whose images were taken for samples
            bad = []
        entries, unlabelled = samples.entries(number)
        return Indexed(SourceInfo(uri, "webdataset-tar", checksum, len(entries), dict(options), compression), entries,
                       bad + unlabelled, int_class_order(entries))

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None,
                 archives: "OpenArchives") -> Iterator:
        if any(e.offset < 0 for e in wanted):  # a sparse member, or a compressed tar indexed without offsets
            yield from archives.payloads(info.uri, wanted, cache_dir)
        elif info.compression in (None, "tar"):  # None: indexed before compression was recorded, so uncompressed
            yield from _ranged(info.uri, wanted)
        else:
            yield from archives.sliced(info.uri, info.compression, wanted, cache_dir)


def _entry(uri: str, number: int, name: str, image_id: str, member, read) -> Entry | Reject | None:
    """The entry of image member ``name``: a reject for a link, None for what is not a file."""
    if member.issym() or member.islnk():
        return Reject(image_id, uri, "link inside archive (not followed)")
    if not member.isfile():
        return None
    # its bytes pass by anyway: hashed as they do
    return Entry(image_id, *image_id.split("/")[:2], number, name, *located(member), fingerprint_bytes(read()))


class _Listed:
    """An archive's members as they stream by, read by ``members_of(stream, self)``, each
    with a ``read()`` of its bytes (valid until the next); once iterated, its checksum (of
    every byte of the source) and compression."""

    def __init__(self, uri: str, cache_dir: str | None, members_of) -> None:
        self.uri, self.cache_dir, self.members_of = uri, cache_dir, members_of
        self.checksum: dict[str, str] = {}
        self.compression = "tar"

    def __iter__(self):
        with open_source(self.uri, self.cache_dir) as raw:
            reader = HashingReader(raw)
            yield from self.members_of(io.BufferedReader(reader, 1 << 20), self)
            self.checksum = reader.drain()


def _by_headers(buffered: io.BufferedReader, listed: _Listed):
    listed.compression = compression_of(buffered.peek(10)[:10])
    stream = buffered if listed.compression == "tar" else io.BufferedReader(DECOMPRESSORS[listed.compression](buffered),
                                                                             1 << 20)
    members = Members(stream)  # damage (a header, the stream, a cut) is its error; a form it leaves to tarfile, Unusual
    for member in members:
        yield member, lambda m=member: members.read(m)


def _by_tarfile(buffered: io.BufferedReader, listed: _Listed):
    with tarfile.open(fileobj=buffered, mode="r|*") as archive:
        listed.compression = archive.fileobj.comptype  # "tar" (none), "gz", "bz2" or "xz"
        for member in archive:
            yield member, lambda m=member: archive.extractfile(m).read()


def _ranged(uri: str, wanted: list[Entry]) -> Iterator:
    """Members of an uncompressed tar, by offset: locally from one open file, on an
    object store as batched ranged requests."""
    fs, path = batch_reader(uri)
    ordered = sorted(range(len(wanted)), key=lambda i: wanted[i].offset)
    got: dict[int, bytes | Unreadable | BaseException] = {}
    try:
        if is_local(fs):
            with fs.open(path, "rb") as f:
                for i in ordered:
                    f.seek(wanted[i].offset)
                    data = f.read(wanted[i].size)
                    got[i] = data if len(data) == wanted[i].size else Unreadable(
                        f"{wanted[i].member} is cut short in {uri} (the archive changed since it was indexed)")
        else:
            for start in range(0, len(ordered), RANGES_PER_REQUEST):
                part = ordered[start:start + RANGES_PER_REQUEST]
                values = fs.cat_ranges([path] * len(part), [wanted[i].offset for i in part],
                                       [wanted[i].offset + wanted[i].size for i in part], on_error="return")
                got.update(zip(part, values))
    except OSError as exc:
        yield from unreadable(wanted, exc)
        return
    for i, e in enumerate(wanted):  # a ranged request's error comes back in place of its bytes
        yield e, Unreadable.of(got[i]) if isinstance(got[i], BaseException) else got[i]


class OpenArchives:
    """Compressed tar archives kept open between calls. An archive streams in one
    direction, so a call whose members all lie ahead of where the last call stopped
    continues the same stream; any other call opens the archive again. Shards are
    contiguous runs of the index, which follows each archive's order, so the shards of a
    run read each archive once instead of once per shard."""

    def __init__(self) -> None:
        # by (kind, uri): a shard with a sparse member streams an archive whose other shards are sliced
        self._open: dict[tuple[type, str], _TarStream | _Decompressed] = {}
        self._kept: dict[str, object] = {}

    def kept(self, uri: str, load):
        """What ``load()`` made of the archive at ``uri``, made once while these archives
        are open (a CIFAR-10 tarball's verified batches: one read per run, not per shard)."""
        if uri not in self._kept:
            self._kept[uri] = load()
        return self._kept[uri]

    def payloads(self, uri: str, wanted: list[Entry], cache_dir: str | None):
        """The members ``wanted`` of the tar at ``uri``, streamed through tarfile by name."""
        yield from self._continued(_TarStream, uri, wanted, lambda: _TarStream(uri, cache_dir))

    def sliced(self, uri: str, compression: str, wanted: list[Entry], cache_dir: str | None):
        """The members ``wanted`` of the compressed tar at ``uri``, each sliced out of its
        decompressed bytes at the offset indexing found (see the module's note)."""
        yield from self._continued(_Decompressed, uri, wanted, lambda: _Decompressed(uri, compression, cache_dir))

    def _continued(self, kind: type, uri: str, wanted: list[Entry], open_stream):
        """``wanted`` from the stream of this kind left open at ``uri``, where they all lie
        ahead of it; else from one opened anew."""
        stream = self._open.get((kind, uri))
        if stream is None or stream.broken or stream.behind(wanted):
            if stream is not None:
                stream.close()
                del self._open[(kind, uri)]
            try:
                stream = self._open[(kind, uri)] = open_stream()
            except (OSError, tarfile.TarError, EOFError) as exc:
                yield from unreadable(wanted, exc)
                return
        yield from stream.take(wanted)

    def close(self) -> None:
        for stream in self._open.values():
            stream.close()
        self._open.clear()
        self._kept.clear()


class _TarStream:
    def __init__(self, uri: str, cache_dir: str | None) -> None:
        self.uri = uri
        self.passed: set[str] = set()  # members already streamed past
        self.broken = False
        self._raw = open_source(uri, cache_dir)
        self._archive = tarfile.open(fileobj=self._raw, mode="r|*")
        self._members = iter(self._archive)

    def behind(self, wanted: list[Entry]) -> bool:
        return any(e.member in self.passed for e in wanted)

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
                    yield e, Unreadable.of(exc)
                if not pending:
                    return
        except (OSError, tarfile.TarError, EOFError) as exc:
            self.broken = True
            yield from unreadable(list(pending.values()), exc)
            return
        for e in pending.values():
            yield e, Unreadable(f"{e.member} vanished from {self.uri}")

    def close(self) -> None:
        self._archive.close()
        self._raw.close()


DECOMPRESSORS = {"gz": lambda raw: gzip.GzipFile(fileobj=raw), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}


class _Decompressed:
    """A compressed tar's decompressed bytes, read forward (``position``: how far)."""

    def __init__(self, uri: str, compression: str, cache_dir: str | None) -> None:
        if compression not in DECOMPRESSORS:
            raise OSError(f"{uri}: unknown tar compression {compression!r}")
        self.uri = uri
        self.position = 0
        self.broken = False
        self._raw = open_source(uri, cache_dir)
        self._stream = io.BufferedReader(DECOMPRESSORS[compression](self._raw), 1 << 20)

    def behind(self, wanted: list[Entry]) -> bool:
        return any(e.offset - BLOCK < self.position for e in wanted)

    def take(self, wanted: list[Entry]):
        """Each wanted member's bytes (in the archive's order), after checking that the
        header before them is the member's own."""
        ordered = sorted(wanted, key=lambda e: e.offset)
        for done, e in enumerate(ordered):
            try:
                self._stream.seek(e.offset - BLOCK - self.position, io.SEEK_CUR)
                block = self._stream.read(BLOCK + e.size)
            except STREAM_ERRORS as exc:
                self.broken = True
                yield from unreadable(ordered[done:], exc)
                return
            self.position = e.offset - BLOCK + len(block)
            if len(block) < BLOCK + e.size or not _own_header(block, e):
                yield e, Unreadable(f"{e.member} is not where indexing found it in {self.uri} "
                                    "(the archive changed since it was indexed; index it again)")
                continue
            yield e, block[BLOCK:]

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


def _own_header(block: bytes, e: Entry) -> bool:
    """Whether ``block`` starts with member ``e``'s own tar header. First its size and
    name fields as bytes (``prefix/name`` in a POSIX header); where they cannot hold the
    name as it is (longer, or not ASCII: a pax or GNU header before carries it), tarfile
    reads the header, whose checksum must be right, and its size must match."""
    member = e.member.encode("utf-8", "surrogateescape")
    # most headers at once: the name field holds the name as it is (no POSIX prefix before
    # it), and the size field is as Python's tarfile and GNU tar write it
    if (len(member) < 100 and block[len(member)] == 0 and block.startswith(member)
            and block[124:136] == b"%011o\0" % e.size and (block[345] == 0 or block[257:265] != tarfile.POSIX_MAGIC)):
        return True
    held = block[:100].split(b"\0", 1)[0]
    if block[257:265] == tarfile.POSIX_MAGIC and (prefix := block[345:500].split(b"\0", 1)[0]):
        held = prefix + b"/" + held
    if held == member:
        try:
            return int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8) == e.size
        except ValueError:  # a size in base-256 (over 8 GB): left to tarfile below
            pass
    elif len(member) <= 100 and member.isascii():
        return False
    try:
        return tarfile.TarInfo.frombuf(block[:BLOCK], tarfile.ENCODING, "surrogateescape").size == e.size
    except tarfile.HeaderError:
        return False
