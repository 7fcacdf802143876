"""Reading source files safely: checksums and options given with a URI, globs and brace
lists, streams (remote ones cached once), digests of what was read, and archive member
names that cannot escape."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re

import fsspec

from tlfs.features.storage import is_local
from tlfs.pipeline.dataset_index import SourceInfo
from tlfs.pipeline.errors import SourceError


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


CHECKSUMS = ("md5", "sha256")
OPTIONS = {
    "split": "the split of every image in the source (WebDataset archives, Parquet tables without a split column)",
    "image": "a Parquet table's image column (binary, or a struct with bytes/path)",
    "label": "a Parquet table's label column (int with class names in the schema, or string)",
    "split_column": "a Parquet table's split column",
    "id": "a Parquet table's image id column",
}
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")


def parse_uri(uri: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A source URI's fragment: expected checksums (``#md5=HEX``, ``#sha256=HEX``) and
    options (``#split=train&label=fine_label``, see :data:`OPTIONS`)."""
    if "#" not in uri:
        return uri, {}, {}
    base, fragment = uri.rsplit("#", 1)
    expected, options = {}, {}
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if not value or (key not in CHECKSUMS and key not in OPTIONS):
            known = ", ".join([f"{k}=HEX" for k in CHECKSUMS] + [f"{k}=NAME" for k in OPTIONS])
            raise SourceError(f"{uri}: unknown fragment {part!r} (known: {known})")
        if key in CHECKSUMS:
            expected[key] = value.lower()
        else:
            options[key] = value
    return base, expected, options


def expand_uri(uri: str) -> list[str]:
    """The files a URI names: itself, or for a glob (``*.tar``) or a brace list
    (``train-{0000..0099}.tar``, ``{a,b}.tar``) every match, sorted. A pattern that
    matches nothing is an error."""
    names = _expand_braces(uri)
    if len(names) == 1 and not any(c in uri for c in "*?["):
        return names
    fs, _ = fsspec.core.url_to_fs(names[0])
    found: list[str] = []
    for name in names:
        protocol, path = fsspec.core.split_protocol(name)
        if any(c in path for c in "*?["):
            matches = sorted(fs.glob(fs._strip_protocol(name)))
            found.extend(m if protocol in (None, "file") else f"{protocol}://{m}" for m in matches)
        else:
            found.append(name)
    if not found:
        raise SourceError(f"{uri}: matches no file")
    return found


_BRACE = re.compile(r"\{([^{}]*)\}")


def _expand_braces(text: str) -> list[str]:
    """``{0000..0099}`` (zero-padded ranges) and ``{a,b,c}`` lists, as in a shell."""
    match = _BRACE.search(text)
    if match is None:
        return [text]
    body = match.group(1)
    if ".." in body:
        low, _, high = body.partition("..")
        if not (low.isdigit() and high.isdigit()):
            raise SourceError(f"{text}: a brace range needs numbers, as in {{0000..0099}}")
        width = len(low) if low.startswith("0") else 0
        options = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    head, tail = text[: match.start()], text[match.end():]
    return [expanded for option in options for expanded in _expand_braces(head + option + tail)]


def split_from_path(uri: str) -> str | None:
    """A split named by a file's path: its parent folder (``.../train/0001.tar``) or its
    name's first part, as Hugging Face names tables (``train-00000-of-00004.parquet``)."""
    path = uri.rstrip("/").split("://")[-1]
    parts = path.split("/")
    stem = parts[-1].split(".")[0]
    for candidate in (stem.split("-")[0].split("_")[0], parts[-2] if len(parts) > 1 else ""):
        if candidate.lower() in SPLIT_NAMES:
            return candidate
    return None


CONNECTIONS = 64  # concurrent requests of one batched read on S3 (botocore's own default is 10)


def batch_reader(uri: str):
    """``(fs, path)`` for batched reads of ``uri``'s files: on S3 with a connection pool
    wide enough for a batch's concurrent requests (a ``max_pool_connections`` set in
    fsspec's own s3 configuration wins)."""
    protocol = fsspec.core.split_protocol(uri)[0]
    if protocol not in ("s3", "s3a"):
        return fsspec.core.url_to_fs(uri)
    given = dict((fsspec.config.conf.get("s3") or {}).get("config_kwargs") or {})
    return fsspec.core.url_to_fs(uri, config_kwargs={"max_pool_connections": CONNECTIONS, **given})


def open_source(uri: str, cache_dir: str | None):
    """Open a file URI for streaming; remote files go through fsspec's local cache so
    the index pass and the payload pass download once. The cached copy is keyed by the
    remote file's identity (its ETag on S3) as well as its URI: an archive replaced in
    place is downloaded again, never read stale from the cache."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not is_local(fs) and cache_dir:
        fs.invalidate_cache(path)  # the identity as the store has it now, not as listed earlier
        identity = hashlib.sha256(f"{uri}\0{fs.ukey(path)}".encode()).hexdigest()[:16]
        storage = os.path.join(cache_dir, f"source-{identity}")
        return fsspec.open(f"simplecache::{uri}", "rb", simplecache={"cache_storage": storage}).open()
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
