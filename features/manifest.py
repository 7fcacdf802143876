"""The manifest: the single commit point of a feature set.

A feature set exists for readers only once ``_manifest.json`` is written, and then
holds exactly the shard files the manifest lists (paths relative to the set, each
with its rows, bytes and sha256). :func:`commit` refuses a set whose shards are
missing, damaged or whose counts do not reconcile (read = written + rejected).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

from tlfs.features import layout
from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.leases import drop_released, live_plans
from tlfs.features.lock import commit_lock
from tlfs.features.storage import atomic_write_json, exists, fs_path, is_local, read_json

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
        _, path = fs_path(f"{set_root}/{shard['path']}")
        if not fs.exists(path):
            reason = "missing"
        elif fs.size(path) != shard["bytes"]:
            reason = f"size {fs.size(path)} != {shard['bytes']}"
        elif sha256_uri(f"{set_root}/{shard['path']}") != shard["sha256"]:
            reason = "sha256 mismatch"
        else:
            continue
        bad.append({**shard, "reason": reason})
    return bad


def validate(set_root: str, manifest: dict) -> None:
    """Every listed shard is there with its size and sha256; counts reconcile."""
    bad = damaged_shards(set_root, manifest)
    if bad:
        raise StoreError(f"shard {bad[0]['path']} of {set_root} is damaged: {bad[0]['reason']}"
                         + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
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


def commit(set_root: str, manifest: dict) -> dict:
    """Under the set's commit lock: :func:`publish`."""
    with commit_lock(set_root):
        return publish(set_root, manifest)


def publish(set_root: str, manifest: dict) -> dict:
    """Validate, write the manifest atomically, then drop what no longer belongs to the
    committed set. The caller holds the set's commit lock."""
    manifest = {"format": FORMAT, **manifest, "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    validate(set_root, manifest)
    atomic_write_json(layout.manifest_uri(set_root), manifest)
    drop_released(set_root, manifest["plan_id"])
    collect_garbage(set_root, manifest)
    return manifest


def collect_garbage(set_root: str, manifest: dict) -> list[str]:
    """Remove what belongs to no committed set and to no live run. Called under the
    commit lock, right after the manifest is written.

    The rule (features/leases.py): another plan's staging, shard files and temporary
    files go only while no lease on that plan is live; the committed plan's staging
    stays (its records let a re-run of the same plan skip its finished shards).
    Temporary files that belong to no plan (a crashed writer's manifest or head) go
    once they are ``TEMP_MAX_AGE`` old. Best effort: what cannot be removed now is
    removed by a later commit."""
    fs, root = fs_path(set_root)
    live = live_plans(set_root)
    live8 = {plan_id[:8] for plan_id in live}
    keep = {f"{root}/{s['path']}" for s in manifest["shards"]}
    doomed = []
    for path in (found for pattern in layout.shard_globs(root) for found in fs.glob(pattern)):
        if path not in keep and layout.plan_of_shard_file(path.rsplit("/", 1)[-1]) not in live8:
            doomed.append(path)
    staging = f"{root}/{layout.STAGING}/"
    for path in fs.glob(f"{staging}*"):
        plan_id = path[len(staging):]
        if plan_id != manifest["plan_id"] and plan_id not in live:
            doomed.append(path)
    if is_local(fs):  # temporary files left by a crashed writer (object stores leave none)
        for path in fs.glob(f"{root}/**/.*.tmp"):
            relative = path[len(root) + 1:]
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
        try:
            fs.rm(path, recursive=True)
            removed.append(path)
        except OSError:  # gone already
            continue
    return removed


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except FileNotFoundError:  # a live writer renamed it meanwhile
        return False
