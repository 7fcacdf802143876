"""Leases: which plans of a feature set are live, so that a commit never removes what a
running step still needs.

A process that works on a plan (planning it, extracting its shards, committing it)
holds a lease on it: ``_staging/<plan>/leases/<holder>.json``, holding the time it runs
out. A background thread renews it every quarter of its term while the step runs. On
release, the holder leaves it to run out ``linger`` seconds later: 0 for a whole run in
one process, longer between the tasks of a DAG run, whose next task may wait in a queue.

The one rule, applied by :func:`features.manifest.collect_garbage` under the commit
lock: **a commit removes another plan's files (its staging, its shard files, its
temporary files) only while no lease on that plan is live.** A lease is taken under the
same lock, so a commit never removes a plan between its lease being written and seen.

A holder whose plan was removed anyway (its lease ran out: the process was stopped
longer than its term, or its clock is far behind the committer's) finds out at its next
:meth:`Lease.check`, or when a file it needs is gone, and stops with
:class:`~features.errors.PlanReplaced`: one line saying what happened and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

from tlfs.features import layout
from tlfs.features.errors import PlanReplaced
from tlfs.features.lock import commit_lock
from tlfs.features.storage import atomic_write_json, exists, fs_path, read_json_if_exists

DEFAULT_TTL = 600.0  # seconds a holder's lease lasts unless renewed


@dataclass(frozen=True)
class LeaseTerms:
    """How long a lease lasts while held (``ttl``) and after release (``linger``)."""

    ttl: float = DEFAULT_TTL
    linger: float = 0.0


class Lease:
    """A held lease on one plan; see the module's docstring."""

    def __init__(self, set_root: str, plan_id: str, ttl: float = DEFAULT_TTL, linger: float = 0.0) -> None:
        self.set_root, self.plan_id, self.ttl, self.linger = set_root, plan_id, float(ttl), float(linger)
        holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.uri = f"{layout.leases_uri(set_root, plan_id)}/{holder}.json"
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------ holding
    def acquire(self, plan_must_exist: bool = True) -> "Lease":
        """Write the lease under the commit lock; with ``plan_must_exist``, the plan must
        still be there once the lease is held (a task of an existing plan)."""
        with commit_lock(self.set_root):
            self._write(self.ttl)
        if plan_must_exist:
            self.check()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name=f"tlfs-lease-{layout.plan_prefix(self.plan_id)}")
        self._renewer.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost:
            return
        with contextlib.suppress(OSError):
            if self.linger > 0:
                self._write(self.linger, released=True)
            else:
                fs, path = fs_path(self.uri)
                fs.rm_file(path)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ checking
    def check(self) -> None:
        """Raise :class:`PlanReplaced` if another run's commit removed this plan."""
        if self.lost or not exists(self.uri):
            self.lost = True
            raise PlanReplaced(replaced_message(self.set_root, self.plan_id))
        try:
            require_plan(self.set_root, self.plan_id)
        except PlanReplaced:
            self.lost = True
            raise

    # ------------------------------------------------------------ internals
    def _write(self, seconds: float, released: bool = False) -> None:
        atomic_write_json(self.uri, {"until": time.time() + seconds, "ttl": self.ttl, "released": released})

    def _renew(self) -> None:
        plan = layout.plan_uri(self.set_root, self.plan_id)
        while not self._stop.wait(self.ttl / 4):
            try:
                if not exists(self.uri) or not exists(plan):  # a commit judged this plan dead and removed it
                    self.lost = True
                    return
                self._write(self.ttl)
                if not exists(plan):  # removed while renewing: take back what was just written
                    self.lost = True
                    fs, path = fs_path(self.uri)
                    fs.rm_file(path)
                    return
            except OSError:  # a failed renewal is retried at the next tick
                continue


@contextlib.contextmanager
def hold(set_root: str, plan_id: str, terms: LeaseTerms = LeaseTerms(), plan_must_exist: bool = True) -> Iterator[Lease]:
    lease = Lease(set_root, plan_id, terms.ttl, terms.linger).acquire(plan_must_exist)
    try:
        yield lease
    finally:
        lease.release()


def live_plans(set_root: str, now: float | None = None) -> set[str]:
    """The ids of the plans that hold a lease that has not run out."""
    fs, root = fs_path(set_root)
    return {path[len(root) + 1 :].split("/")[1] for path in _live(fs, f"{root}/{layout.STAGING}/*/{layout.LEASES}/*.json", now)}


def live_leases(set_root: str, plan_id: str, now: float | None = None) -> int:
    """How many runs hold a lease on ``plan_id`` that has not run out (a caller's own included)."""
    fs, folder = fs_path(layout.leases_uri(set_root, plan_id))
    return len(_live(fs, f"{folder}/*.json", now))


def _live(fs, pattern: str, now: float | None) -> list[str]:
    """The lease files matching ``pattern`` that have not run out (an unreadable one counts
    as live: it will run out)."""
    now = time.time() if now is None else now
    live = []
    for path, record in _lease_records(fs, pattern):
        try:
            alive = record is None or float(record["until"]) > now
        except (KeyError, TypeError, ValueError):
            alive = True
        if alive:
            live.append(path)
    return live


def live_bases(set_root: str, live: set[str] | None = None, known: dict[str, dict | None] | None = None) -> set[int]:
    """The versions that live runs (``live``: their plan ids; by default read here) build
    on: an incremental plan's ``base``, whose files it reuses, so that no vacuum drops them.
    ``known``: plan id -> base of plans the caller holds already (a commit, its own: its
    ``plan.json``, as large as its list of shards, is then not read again)."""
    live = live_plans(set_root) if live is None else live
    known = known or {}
    bases = set()
    for plan_id in live:
        base = known[plan_id] if plan_id in known else _base_of(set_root, plan_id)
        if base:
            bases.add(int(base["version"]))
    return bases


def _base_of(set_root: str, plan_id: str) -> dict | None:
    """A saved plan's ``base`` (None: a full run, or a plan not readable yet)."""
    try:
        plan = read_json_if_exists(layout.plan_uri(set_root, plan_id)) or {}
    except ValueError:  # being written (an object store shows no partial file; a test may)
        return None
    return plan.get("base") if isinstance(plan, dict) else None


def _lease_records(fs, pattern: str) -> Iterator[tuple[str, dict | None]]:
    """Each lease file matching ``pattern`` with its record (None where unreadable);
    one released meanwhile is skipped."""
    for path in fs.glob(pattern):
        try:
            with fs.open(path, "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            continue
        except (ValueError, OSError):
            record = None
        yield path, record if isinstance(record, dict) else None


def drop_released(set_root: str, plan_id: str) -> None:
    """Once plan ``plan_id`` is committed, the leases its finished tasks left lingering
    (for the plan's next task) have served: remove them, so that the next commit of
    another plan can remove this one's files. Leases still held stay."""
    fs, root = fs_path(layout.leases_uri(set_root, plan_id))
    for path, record in _lease_records(fs, f"{root}/*.json"):
        if record and record.get("released"):
            with contextlib.suppress(OSError):
                fs.rm_file(path)


def replaced_message(set_root: str, plan_id: str) -> str:
    return (f"plan {plan_id} of {set_root} was replaced: another run's commit removed its staging "
            "(this run was not seen renewing its lease); run the extraction again, which makes a fresh plan")


def require_plan(set_root: str, plan_id: str) -> None:
    """Raise :class:`PlanReplaced` unless the plan's ``plan.json`` is there."""
    if not exists(layout.plan_uri(set_root, plan_id)):
        raise PlanReplaced(replaced_message(set_root, plan_id))


@contextlib.contextmanager
def translate_missing(set_root: str, plan_id: str) -> Iterator[None]:
    """A file of the plan that vanished because another run's commit removed the plan
    becomes :class:`PlanReplaced`; any other missing file stays what it is."""
    try:
        yield
    except FileNotFoundError:
        require_plan(set_root, plan_id)  # the plan is gone: PlanReplaced instead
        raise
