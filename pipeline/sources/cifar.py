"""The canonical CIFAR-10 python tarball (``cifar-10-batches-py/``): checksum-verified
before any of its pickles is read, then read with an unpickler that admits only numpy
arrays and plain containers."""

from __future__ import annotations

import io
import pickle
import posixpath
import tarfile
from typing import Iterator

from tlfs.pipeline.dataset_index import Entry, SourceInfo
from tlfs.pipeline.sources.base import Indexed
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.hashing import digest, fingerprint_bytes, verify_expected
from tlfs.pipeline.sources.reading import open_source


CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


CIFAR_DIR = "cifar-10-batches-py"


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
    with open_source(uri, cache_dir) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            base = posixpath.basename(member.name)
            if member.isfile() and (base.startswith("data_batch_") or base in ("test_batch", "batches.meta")):
                try:
                    yield base, _load_batch(archive.extractfile(member).read())
                except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as exc:
                    raise SourceError(f"{uri}: {member.name} is not a CIFAR-10 batch: {exc}") from None


def index_cifar(uri: str, number: int, cache_dir: str | None, checksum: dict[str, str], expected: dict[str, str]) -> Indexed:
    """Called by the tar source, which recognised the archive's members."""
    _cifar_trusted(uri, checksum, expected)
    if expected:
        verify_expected(uri, SourceInfo(uri, "cifar10-python", checksum), expected)
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
            found.append(Entry(f"{split}/{name}/{filename.decode()}", split, name, number, f"{base}:{row}",
                               fingerprint=fingerprint_bytes(batch[b"data"][row].tobytes())))
    return Indexed(SourceInfo(uri, "cifar10-python", checksum, len(found)), found, [], classes)


class CifarTarball:
    formats = ("cifar10-python",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        raise SourceError(f"{uri}: a CIFAR-10 tarball is indexed as a tar archive")  # see pipeline/sources/tar.py

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        """The wanted images, from the archive's batches. A run's shards share ``archives``,
        which keep the batches: the archive is hashed and unpickled once per run (60,000
        images, 184 MB of pixels), not once per shard."""
        batches = archives.kept(info.uri, lambda: _verified_batches(info, cache_dir))
        for e in wanted:
            base, row = e.member.split(":")
            yield e, batches[base][b"data"][int(row)].reshape(3, 32, 32).transpose(1, 2, 0).copy()


def _verified_batches(info: SourceInfo, cache_dir: str | None) -> dict[str, dict]:
    """Every batch of the archive, by name; verified again before unpickling: the file
    may have changed since it was indexed."""
    if digest(info.uri, cache_dir)["sha256"] != info.checksum["sha256"]:
        raise SourceError(f"{info.uri}: changed since it was indexed (sha256 differs); its pickles are not read")
    return dict(_cifar_batches(info.uri, cache_dir))
