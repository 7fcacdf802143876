"""Opening source files: streams (remote ones through a local cache, downloaded once) and
batched reads of many files (an S3 connection pool wide enough for them; a few threads
locally)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import fsspec

from tlfs.features.storage import is_local

CONNECTIONS = 64  # concurrent requests of one batched read on S3 (botocore's own default is 10)
LOCAL_THREADS = 4  # local files read at once


def batch_reader(uri: str):
    """``(fs, path)`` for batched reads of ``uri``'s files: on S3 with a connection pool
    wide enough for a batch's concurrent requests (a ``max_pool_connections`` set in
    fsspec's own s3 configuration wins)."""
    protocol = fsspec.core.split_protocol(uri)[0]
    if protocol not in ("s3", "s3a"):
        return fsspec.core.url_to_fs(uri)
    given = dict((fsspec.config.conf.get("s3") or {}).get("config_kwargs") or {})
    return fsspec.core.url_to_fs(uri, config_kwargs={"max_pool_connections": CONNECTIONS, **given})


def read_files(fs, paths: list[str]) -> list:
    """The bytes of each of ``paths`` on ``fs`` (from :func:`batch_reader`), in their order, or
    :class:`~tlfs.pipeline.image_decode.Unreadable`, why a file could not be read: locally a
    few threads; elsewhere one batched ``cat``, whose requests fsspec's async filesystems
    (s3fs, gcsfs, adlfs) send concurrently."""
    from tlfs.pipeline.image_decode import Unreadable

    if is_local(fs):
        def one(path: str):
            try:
                with fs.open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                return Unreadable.of(exc)

        with ThreadPoolExecutor(LOCAL_THREADS, thread_name_prefix="tlfs-readdir") as pool:
            return list(pool.map(one, paths))
    got = fs.cat(paths, on_error="return")
    out = []
    for path in paths:
        value = got.get(path, got.get(fs._strip_protocol(path)))
        if isinstance(value, BaseException):
            value = Unreadable.of(value)
        out.append(value if value is not None else Unreadable(f"{path}: no such file"))
    return out


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
