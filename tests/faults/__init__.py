"""Fault injection for the crash tests: SIGKILL a process at its N-th storage event.

Switched on by environment variables, so that it reaches any process a test starts (a
``tlfs`` command, an Airflow task) through ``site/sitecustomize.py`` on PYTHONPATH:

- ``TLFS_FAULT_LOG``: append one line per event, ``<n>\\t<kind>\\t<path>``;
- ``TLFS_KILL_AT``: SIGKILL the process at event number N (1-based);
- ``TLFS_KILL_MATCH``: count only events whose path contains this text;
- ``TLFS_KILL_ONCE``: a marker file; kill only while it does not exist (it is created
  just before the kill), so that a retried task survives;
- ``TLFS_STOP_AT``: at event N, create the file ``TLFS_STOP_MARKER`` and SIGSTOP the
  whole process (every thread), for a test to continue it (SIGCONT) when it chooses;
- ``TLFS_FULL_AT``: the disk is full from the N-th local write on (counted as the bytes go
  to the disk, of the paths ``TLFS_KILL_MATCH`` matches): that write and every later one, of
  any path, puts half of its temporary file, then fails as a full disk's does (``ENOSPC``).

In-process, ``install(env, patch=monkeypatch.setattr, action=f)`` calls
``f(n, kind, path)`` at every event instead (e.g. to remove files at step n).

The events are the moments a crash can tear the store: ``write`` (the process dies
after writing half of the temporary file), ``rename`` (the temporary file is complete,
the rename has not happened), ``done`` (right after the rename), ``put`` (a file being
copied into place: half of it is there) and ``rm`` (just before a delete).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path
from typing import Callable

from fsspec.implementations.local import LocalFileSystem

import tlfs.features.storage as storage

KINDS = ("write", "rename", "done", "put", "rm")
SITE = os.path.join(os.path.dirname(__file__), "site")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_path(faults: bool = True) -> str:
    """PYTHONPATH for a process a test starts: the fault hooks (``faults``), this
    repository (for ``tests.faults``), then whatever PYTHONPATH the test runs under."""
    parts = ([SITE] if faults else []) + [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)


class Injector:
    def __init__(self, env: dict, action: Callable[[int, str, str], None] | None = None) -> None:
        self.log = env.get("TLFS_FAULT_LOG")
        self.action = action
        self.stop_at = int(env["TLFS_STOP_AT"]) if env.get("TLFS_STOP_AT") else None
        self.stop_marker = env.get("TLFS_STOP_MARKER")
        self.kill_at = int(env["TLFS_KILL_AT"]) if env.get("TLFS_KILL_AT") else None
        self.match = env.get("TLFS_KILL_MATCH", "")
        self.once = env.get("TLFS_KILL_ONCE")
        self.full_at = int(env["TLFS_FULL_AT"]) if env.get("TLFS_FULL_AT") else None
        self.full = False
        self.count = 0
        self.writes = 0  # local writes counted at the disk (TLFS_FULL_AT)
        self._lock = threading.RLock()  # the writer pool's threads write at once: each event counted once

    def event(self, kind: str, path: str, tear=None) -> None:
        """Count the event; at the chosen one, tear the write (``tear()``) and die."""
        if self.match not in path:
            return
        with self._lock:
            self._event(kind, path, tear)

    def disk_full(self, path: str) -> bool:
        """Count a local write as its bytes go to the disk; whether the disk is full for it."""
        with self._lock:
            if self.match in path:
                self.writes += 1
                self.full = self.full or self.writes == self.full_at
            return self.full

    def _event(self, kind: str, path: str, tear) -> None:
        self.count += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{self.count}\t{kind}\t{path}\n")
        if self.action:
            self.action(self.count, kind, path)
        if self.count == self.stop_at:
            open(self.stop_marker, "w").close()
            os.kill(os.getpid(), signal.SIGSTOP)
        if self.count != self.kill_at:
            return
        if self.once:
            if os.path.exists(self.once):
                return
            open(self.once, "w").close()
        if tear:
            tear()
        os.kill(os.getpid(), signal.SIGKILL)


def state(pid: int) -> str | None:
    """A process's state letter from Linux's /proc (R, S, T: stopped, Z: zombie, ...); None
    once it is gone. A test that continues a run stopped at ``TLFS_STOP_AT`` waits for T:
    the marker file is made just before the stop, and a SIGCONT sent in between is lost."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def install(env=os.environ, patch: Callable = setattr, action: Callable[[int, str, str], None] | None = None) -> Injector | None:
    if not (env.get("TLFS_FAULT_LOG") or env.get("TLFS_KILL_AT") or env.get("TLFS_STOP_AT") or env.get("TLFS_FULL_AT")
            or action):
        return None
    injector = Injector(env, action)
    atomic_write_bytes, write_synced = storage.atomic_write_bytes, storage._write_synced
    mv, put_file, rm = LocalFileSystem.mv, LocalFileSystem.put_file, LocalFileSystem.rm

    def write_hooked(uri: str, data: bytes) -> None:
        fs, path = storage.fs_path(uri)

        def tear() -> None:  # what a crash mid-write leaves: a partial temporary file
            if storage.is_local(fs):
                parent, name = path.rsplit("/", 1)
                os.makedirs(parent, exist_ok=True)
                with open(f"{parent}/.{name}.torn.tmp", "wb") as f:
                    f.write(_half(data))

        injector.event("write", path, tear)
        atomic_write_bytes(uri, data)
        injector.event("done", path)

    def mv_hooked(self, path1, path2, *args, **kwargs):
        injector.event("rename", str(path2))
        return mv(self, path1, path2, *args, **kwargs)

    def put_hooked(self, lpath, rpath, *args, **kwargs):
        def tear() -> None:
            with open(lpath, "rb") as src, open(self._strip_protocol(rpath), "wb") as dst:
                dst.write(_half(src.read()))

        injector.event("put", str(rpath), tear)
        return put_file(self, lpath, rpath, *args, **kwargs)

    def rm_hooked(self, path, *args, **kwargs):
        injector.event("rm", str(path))
        return rm(self, path, *args, **kwargs)

    def write_synced_hooked(fs, path: str, data) -> None:
        if not injector.disk_full(path):
            return write_synced(fs, path, data)
        with open(path, "wb") as f:  # what a full disk takes of the file before it fails
            f.write(_half(memoryview(data).tobytes()))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    patch(storage, "atomic_write_bytes", write_hooked)
    patch(storage, "_write_synced", write_synced_hooked)
    patch(LocalFileSystem, "mv", mv_hooked)
    patch(LocalFileSystem, "put_file", put_hooked)
    patch(LocalFileSystem, "rm", rm_hooked)
    return injector
