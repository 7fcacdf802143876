"""One committer at a time per feature set.

Two runs of the same set may extract at once (their shard files are named by plan, and
a plan's files are identical whoever writes them), but publishing the manifest and
removing the files of other plans must not interleave: without the lock, run A could
delete run B's shards between B's validation and B's manifest write, and B would
publish a manifest naming missing files. Under the lock, the later committer
re-validates and either publishes a complete set or fails naming the missing shard.

Locally the lock is ``fcntl.flock`` on ``_commit.lock`` (the kernel releases it when a
process dies, so a crash never leaves it held). On object stores it is an object
created with a conditional PUT (``If-None-Match: *``, which S3, MinIO and moto
honour); one older than ``stale_after`` seconds is taken to be a crashed holder's and
removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from typing import Iterator

from tlfs.features.errors import StoreError, WriteFailed
from tlfs.features.storage import fs_path, is_local

LOCK_NAME = "_commit.lock"
# seconds a committer waits for the set's lock, and after which a lock is taken as left by a
# crashed committer (a commit takes well under a second; ten minutes leaves room for slow stores)
LOCK_TIMEOUT = 600.0
LOCK_STALE_AFTER = 600.0


@contextlib.contextmanager
def commit_lock(set_root: str, timeout: float = LOCK_TIMEOUT, stale_after: float = LOCK_STALE_AFTER,
                poll: float = 0.2) -> Iterator[None]:
    fs, root = fs_path(set_root)
    path = f"{root}/{LOCK_NAME}"
    if is_local(fs):
        with _flock(path, timeout, poll):
            yield
        return
    token = _acquire_object(fs, path, timeout, stale_after, poll)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # stale removal by another process is tolerated
            if _holder(fs.cat_file(path)).get("token") == token:
                fs.rm_file(path)


@contextlib.contextmanager
def _flock(path: str, timeout: float, poll: float) -> Iterator[None]:
    import fcntl

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:  # a read-only or full disk: one line naming the file, as for any write
        raise WriteFailed.of(path, exc) from exc
    deadline = time.monotonic() + timeout
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"another run has held the commit lock {path} for over {timeout:.0f}s") from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire_object(fs, path: str, timeout: float, stale_after: float, poll: float) -> str:
    token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
    body = json.dumps({"token": token, "at": time.time()}).encode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fs.pipe_file(path, body, mode="create")
            return token
        except Exception as exc:  # noqa: BLE001 - s3fs maps 412 PreconditionFailed variously
            if not _already_exists(exc):
                raise
        with contextlib.suppress(FileNotFoundError):
            held = _holder(fs.cat_file(path))
            if held.get("token") == token:  # our own PUT got through; only its answer was lost
                return token
            if time.time() - float(held.get("at", 0)) > stale_after:
                fs.rm_file(path)  # a crashed committer's lock
                continue
        if time.monotonic() > deadline:
            raise StoreError(f"another run has held the commit lock {path} for over {timeout:.0f}s")
        time.sleep(poll)


def _holder(body: bytes) -> dict:
    """The lock's record; none (so stale) where it is not one of ours: the empty file a local
    store's lock leaves, copied with the store onto an object store."""
    try:
        held = json.loads(body)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _already_exists(exc: Exception) -> bool:
    return isinstance(exc, FileExistsError) or "PreconditionFailed" in repr(exc) or "412" in str(exc)
