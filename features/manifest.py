"""The manifest: the single commit point of a feature set.

A feature set exists for readers only once ``_manifest.json`` is written, and then
holds exactly the shard files the manifest lists (paths relative to the set, each
with its rows, bytes and sha256). :func:`commit` refuses a set whose shards are
missing, damaged or whose counts do not reconcile (read = written + rejected).

Each commit is a new version (features/versions.py): its manifest is written to
``_versions/`` first, its files are checked and moved into the ``layer=`` folders, then
the manifest is written to ``_manifest.json`` (the commit point); then the older
version's files are moved to ``_retired/`` and the retention applied, as the manifest's
index of the history decided it (features/versions.VersionIndex: no older version's
file is read). A commit whose files and counts equal the newest version's adds no version.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from tlfs.features import layout, storage, versions
from tlfs.features.errors import FilesMissing, NotCommitted, StoreError
from tlfs.features.leases import drop_released, live_bases, live_plans
from tlfs.features.lock import commit_lock
from tlfs.features.storage import exists, fs_path, is_local, read_json, read_json_if_exists
from tlfs.features.versions import Retention

FORMAT = 1
TEMP_MAX_AGE = 3600.0  # seconds; younger temporary files may belong to a live writer


def read_manifest(set_root: str) -> dict:
    uri = layout.manifest_uri(set_root)
    if not exists(uri):
        raise NotCommitted(f"no committed feature set at {set_root} (no {layout.MANIFEST})")
    return read_json(uri)


def damaged_shards(set_root: str, manifest: dict) -> list[dict]:
    """Every listed shard file that is missing, of the wrong size or whose sha256 does
    not match the manifest, with the reason."""
    from tlfs.features.storage import sha256_uri

    fs, _ = fs_path(set_root)
    bad = []
    for shard in manifest["shards"]:
        found = versions.locate(set_root, shard["path"])
        _, path = fs_path(found) if found else (None, None)
        if found is None:
            reason = "missing"
        elif fs.size(path) != shard["bytes"]:
            reason = f"size {fs.size(path)} != {shard['bytes']}"
        elif sha256_uri(found) != shard["sha256"]:
            reason = "sha256 mismatch"
        else:
            continue
        bad.append({**shard, "reason": reason})
    return bad


def validate(set_root: str, manifest: dict, listing: versions.Listing | None = None) -> None:
    """Every listed shard is there with its size (in ``listing``: one listing of the set,
    no file read; the sizes and sha256 are the writer's, from the bytes it wrote); counts
    reconcile. ``tlfs verify`` (:func:`damaged_shards`) reads every byte."""
    listing = listing or versions.Listing(set_root)
    bad = listing.missing(manifest["shards"])
    if bad:
        raise FilesMissing(f"shard {bad[0]['path']} of {set_root} is damaged: {bad[0]['reason']}"
                           + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""), bad)
    rows: dict[tuple[str, str, str], int] = defaultdict(int)
    for shard in manifest["shards"]:
        rows[(shard["layer"], shard["split"], shard.get("view", layout.ORIGINAL))] += shard["rows"]
    for split, counts in manifest["counts"].items():
        if counts["read"] != counts["written"] + counts["rejected"]:
            raise StoreError(f"split {split}: read {counts['read']} != written {counts['written']} + rejected {counts['rejected']}")
        for layer in manifest["layers"]:
            for view in manifest.get("views", [layout.ORIGINAL]):
                if rows[(layer, split, view)] != counts["written"]:
                    raise StoreError(f"layer {layer}, split {split}, view {view}: shards hold {rows[(layer, split, view)]} rows, "
                                     f"expected {counts['written']}")


class CommittedManifest:
    """A committed manifest (``self.manifest``, as :func:`publish` wrote it) read by name:
    the one place outside this module's checks where its keys are spelled."""

    manifest: dict

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def backbone_version(self) -> str:
        return self.manifest["backbone_version"]

    @property
    def plan_id(self) -> str:
        return self.manifest["plan_id"]

    @property
    def version(self) -> int:
        """This commit's number in the set's history (1, 2, ...)."""
        return versions.number_of(self.manifest)

    @property
    def committed_at(self) -> str:
        return self.manifest["committed_at"]

    @property
    def changes(self) -> dict:
        """What this version changed against its parent: images added, changed
        (re-extracted), removed and reused (pipeline/records.Changes as JSON; empty for a
        full run and for a set committed before versions)."""
        return dict(self.manifest.get("changes") or {})

    @property
    def backbone(self) -> str:
        """The backbone's name (``backbone_version`` is the exact export)."""
        return self.manifest["backbone"]

    @property
    def lineage(self) -> dict:
        """The model, runtime, sources and code that made the rows (features/manifest.Manifest)."""
        return self.manifest["lineage"]

    @property
    def model_uri(self) -> str:
        """Where the exported model that made the rows is."""
        return self.lineage["model_uri"]

    @property
    def shard_files(self) -> int:
        return len(self.manifest["shards"])

    @property
    def layers(self) -> dict[str, int]:
        """Layer name -> feature width, shallow to deep."""
        return dict(self.manifest["layers"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def views(self) -> list[str]:
        """The stored views: always ``original``; ``flip`` where extracted with ``--views flip``."""
        return list(self.manifest.get("views", [layout.ORIGINAL]))

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Each split's images read, written and rejected."""
        return self.manifest["counts"]

    @property
    def rejected(self) -> int:
        return len(self.manifest["rejects"])


@dataclass(frozen=True)
class Published(CommittedManifest):
    """The version a commit leaves readers with: the one it wrote, or the newest already
    there when that holds the same rows (``unchanged``: no version added). ``manifest`` is
    that version's manifest as written, the JSON readers read."""

    manifest: dict
    unchanged: bool = False


def commit(set_root: str, manifest: dict, retention: Retention = Retention()) -> Published:
    """Under the set's commit lock: :func:`publish`."""
    with commit_lock(set_root):
        return publish(set_root, manifest, retention)


CONTENT = ("layers", "views", "splits", "classes", "counts", "rejects")  # with the files: what a reader gets


def same_content(a: dict, b: dict) -> bool:
    """Whether two manifests give readers the same rows: same files, counts and rejects
    (the files, one per shard and layer, compared last: a run that changed anything
    changed its counts, mostly)."""
    files = lambda m: {s["path"]: s["sha256"] for s in m["shards"]}  # noqa: E731
    return all(a.get(k) == b.get(k) for k in CONTENT) and files(a) == files(b)


def publish(set_root: str, manifest: dict, retention: Retention = Retention(), check=lambda: None,
            listing: versions.Listing | None = None) -> Published:
    """Validate (against ``listing``, as listed: so first, before anything is written),
    write the new version and then the manifest atomically, settle the files, and drop
    what no retained version and no live run needs. The caller holds
    the set's commit lock. If the newest version already holds exactly these files and
    counts, nothing is written and that version is returned (``unchanged``: true).
    ``check()`` runs last before the commit point (the caller's: is its plan still there).
    ``listing``: the set and its newest manifest, listed and read once under the lock (by
    default here); nothing of the files is read, so a commit costs what it adds, not the
    set's size."""
    listing = listing or versions.Listing.with_newest(set_root)
    validate(set_root, manifest, listing)  # first, before anything is written (FilesMissing names each file)
    # the manifest read with the listing, under the same lock (else read here)
    current = read_json_if_exists(layout.manifest_uri(set_root)) if listing.newest is versions.UNREAD else listing.newest
    if current is not None:
        if not listing.settled:  # else nothing is left to settle (a listing without ``current``: never settled)
            versions.settle(set_root, current, listing)  # finish a commit that crashed after its manifest
        if same_content(current, manifest):
            return Published(current, unchanged=True)
    number = versions.number_of(current) + 1 if current else 1
    manifest = {"format": FORMAT, **manifest, "version": number,
                "parent_version": versions.number_of(current) if current else None,
                "committed_at": versions.timestamp()}
    manifest.pop("unchanged", None)
    manifest[versions.INDEX] = versions.next_index(set_root, current, manifest, retention,
                                                   _protected(set_root, manifest, live_plans(set_root)), listing).to_json()
    if current is not None and layout.version_name(versions.number_of(current)) not in listing.others:
        versions.record(set_root, current)  # a set committed before versions existed: its version 1
        listing.others[layout.version_name(versions.number_of(current))] = 0
    encoded = storage.json_bytes(manifest)  # once: the version file and the manifest are the same bytes
    versions.record(set_root, manifest, encoded)  # not a version until the manifest names it (history() skips it)
    check()  # last, right before the commit point
    versions.move_in(set_root, manifest, listing)  # out of staging, which a failed run's clean-up may remove
    storage.atomic_write_bytes(layout.manifest_uri(set_root), encoded)  # the commit point
    versions.retire_others(set_root, manifest, listing)
    drop_released(set_root, manifest["plan_id"])
    collect_garbage(set_root, manifest, retention, listing)  # the leases as drop_released left them
    return Published(manifest)


def _protected(set_root: str, manifest: dict, live: set[str]) -> set[int]:
    """The versions live runs build on (the committing plan's own base known from ``manifest``)."""
    return live_bases(set_root, live, {manifest["plan_id"]: (manifest.get("lineage") or {}).get("base")})


def collect_garbage(set_root: str, manifest: dict, retention: Retention = Retention(),
                    listing: versions.Listing | None = None) -> list[str]:
    """Remove what belongs to no retained version and to no live run. Called under the
    commit lock, right after the manifest is written and settled.

    The rule (features/leases.py): another plan's staging and temporary files go only
    while no lease on that plan is live; the committed plan's staging stays (its records
    let a re-run of the same plan skip its finished shards, and the next incremental run
    reuse its images). Retired files go once no version that ``retention`` keeps lists
    them (features/versions.py: :func:`~versions.apply_index` for a manifest that carries
    its commit's decision, else :func:`~versions.vacuum`). Temporary files that belong to no plan (a
    crashed writer's manifest or head) go once they are ``TEMP_MAX_AGE`` old. Best
    effort: what cannot be removed now is removed by a later commit. The committed
    plan's emptied ``files/`` folders go too (a glob of the set then finds each file once).

    On a local disk a superseded plan's staging is set aside by one rename (to
    ``_superseded/``), not deleted: its entries list every image of the set, and freeing
    a file's blocks costs in proportion to its size (ext4: 0.18 ms for 190 KB, 0.58 ms for
    1.9 MB), which would make the commit cost what the set is rather than what changed.
    :func:`remove_superseded` deletes it, called by the next planning (which writes a file
    of that size anyway) and ``tlfs vacuum``. An object store deletes in bulk, by object
    count, not size: there it is deleted here."""
    fs, root = fs_path(set_root)
    listing = listing or versions.Listing(set_root)
    live = live_plans(set_root)
    live8 = {layout.plan_prefix(plan_id) for plan_id in live}
    if versions.INDEX in manifest:  # what its commit decided (features/versions.VersionIndex)
        versions.apply_index(set_root, manifest, listing)
    else:
        versions.vacuum(set_root, manifest, retention, _protected(set_root, manifest, live), listing=listing)
    doomed = []
    staging = f"{root}/{layout.STAGING}/"
    for plan_id in sorted(listing.staging_plans):
        if plan_id != manifest["plan_id"] and plan_id not in live:
            doomed.append(f"{staging}{plan_id}")
    superseded = set(doomed)  # plans' staging folders; the rest are temporary files
    if is_local(fs):  # temporary files left by a crashed writer (object stores leave none)
        _remove_empty_folders(f"{staging}{manifest['plan_id']}/files")
        for relative in [r for r in listing.others if r.rsplit("/", 1)[-1].startswith(".") and r.endswith(".tmp")]:
            path = f"{root}/{relative}"
            if relative.startswith(staging[len(root) + 1:]):
                owner = relative.split("/")[1]
                dead = owner not in live
            elif (plan8 := layout.plan_of_shard_file(path.rsplit("/", 1)[-1])) is not None:
                dead = plan8 not in live8
            else:
                dead = _older_than(path, TEMP_MAX_AGE)
            if dead and not any(path.startswith(f"{d}/") for d in doomed):
                doomed.append(path)
    removed = []
    for path in doomed:
        if is_local(fs) and path in superseded and _set_aside(fs, root, path):
            removed.append(path)
            continue
        try:
            fs.rm(path, recursive=True)
            removed.append(path)
        except OSError:  # gone already
            continue
    return removed


def _set_aside(fs, root: str, plan_folder: str) -> bool:
    """Move a superseded plan's staging folder into ``_superseded/`` (one rename; a name
    of its own: the same plan may be superseded again later); whether it was moved."""
    aside = f"{root}/{layout.SUPERSEDED}"
    try:
        fs.makedirs(aside, exist_ok=True)
        fs.mv(plan_folder, f"{aside}/{plan_folder.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}")
        return True
    except OSError:  # gone already, or not movable: deleted instead
        return False


def remove_superseded(set_root: str) -> int:
    """Delete what commits set aside in ``_superseded/`` (every plan there is superseded
    and unleased, so nothing reads it; no lock is needed); how many plans' folders went."""
    fs, root = fs_path(set_root)
    if not is_local(fs):
        return 0
    aside = f"{root}/{layout.SUPERSEDED}"
    try:
        folders = len(os.listdir(aside))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with contextlib.suppress(OSError):  # removed meanwhile by another planning; or a commit set one more aside
        fs.rm(aside, recursive=True)
    return folders


def _remove_empty_folders(top: str) -> None:
    """Remove every empty folder under ``top`` (and ``top``), deepest first; a folder a
    live writer has just filled stays."""
    for folder, _, _ in sorted(os.walk(top), key=lambda walked: walked[0].count("/"), reverse=True):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            continue


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except FileNotFoundError:  # a live writer renamed it meanwhile
        return False


@dataclass(frozen=True)
class Manifest:
    """A manifest as a commit composes it (:func:`publish` adds its version, parent and
    time, and writes :meth:`to_json`). The schema, in one place: ``layers`` maps each
    layer to its width; ``counts`` each split to its images read, written and rejected
    (read = written + rejected); ``shards`` lists every file (layer, split, shard, path,
    rows, bytes, sha256; layer and view where the view is not the original); ``rejects``
    each refused image with its source and reason; ``changes`` what an incremental run
    changed against its base; ``lineage`` the model, runtime, sources and code that made
    the rows."""

    dataset: str
    backbone: str
    backbone_version: str
    plan_id: str
    layers: dict[str, int]
    views: list[str]
    splits: list[str]
    classes: list[str]
    counts: dict[str, dict[str, int]]
    changes: dict
    shards: list[dict]
    rejects: list[dict]
    lineage: dict

    @property
    def rows(self) -> int:
        return sum(c["written"] for c in self.counts.values())

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "backbone": self.backbone, "backbone_version": self.backbone_version,
                "plan_id": self.plan_id, "layers": self.layers, "views": self.views, "splits": self.splits,
                "classes": self.classes, "rows": self.rows, "counts": self.counts, "changes": self.changes,
                "shards": self.shards, "rejects": self.rejects, "lineage": self.lineage}
