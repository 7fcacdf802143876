"""Small fsspec helpers: atomic writes that a reader never sees half done."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid

import fsspec


def fs_path(uri: str):
    return fsspec.core.url_to_fs(uri)


def is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Locally: write a hidden temporary file beside the target, then rename over it
    (atomic on POSIX). On object stores a PUT is already atomic: an object appears
    whole or not at all, so it is written in place."""
    fs, path = fs_path(uri)
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        for attempt in range(2):
            tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
            try:
                fs.makedirs(parent, exist_ok=True)
                with fs.open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    with contextlib.suppress(AttributeError, OSError, ValueError):
                        os.fsync(f.fileno())
                fs.mv(tmp, path)
                return
            except FileNotFoundError:  # the temporary file or its folder was removed meanwhile: once more
                if attempt:
                    raise
    else:
        try:
            fs.pipe_file(path, data)  # the client library retries throttling and dropped connections
        except Exception as exc:  # noqa: BLE001 - any failure left: name the object and give up
            from tlfs.features.errors import StoreError

            raise StoreError(f"could not write {uri}: {type(exc).__name__}: {exc}") from exc


def atomic_write_json(uri: str, obj) -> None:
    atomic_write_bytes(uri, json.dumps(obj, indent=2, sort_keys=False).encode())


def read_json(uri: str):
    fs, path = fs_path(uri)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def exists(uri: str) -> bool:
    fs, path = fs_path(uri)
    return fs.exists(path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_uri(uri: str) -> str:
    fs, path = fs_path(uri)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
