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

from features import layout
from features.errors import NotCommitted, StoreError
from features.lock import commit_lock
from features.storage import atomic_write_json, exists, fs_path, is_local, read_json

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
    from features.storage import sha256_uri

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
    rows: dict[tuple[str, str], int] = defaultdict(int)
    for shard in manifest["shards"]:
        rows[(shard["layer"], shard["split"])] += shard["rows"]
    for split, counts in manifest["counts"].items():
        if counts["read"] != counts["written"] + counts["rejected"]:
            raise StoreError(f"split {split}: read {counts['read']} != written {counts['written']} + rejected {counts['rejected']}")
        for layer in manifest["layers"]:
            if rows[(layer, split)] != counts["written"]:
                raise StoreError(f"layer {layer}, split {split}: shards hold {rows[(layer, split)]} rows, expected {counts['written']}")


def commit(set_root: str, manifest: dict) -> dict:
    """Under the set's commit lock: validate, publish the manifest atomically, then drop
    shard files and staging that no longer belong to the committed set."""
    with commit_lock(set_root):
        manifest = {"format": FORMAT, **manifest, "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        validate(set_root, manifest)
        atomic_write_json(layout.manifest_uri(set_root), manifest)
        collect_garbage(set_root, manifest)
    return manifest


def collect_garbage(set_root: str, manifest: dict) -> list[str]:
    """Remove shard files not listed by the committed manifest (older plans), and the
    staging areas of other plans. The committed plan's staging records stay: they let
    a re-run of the same plan skip its finished shards. Best effort: another run may be
    writing into what is removed (it then fails at its own commit, saying so); what
    cannot be removed now is removed by a later commit."""
    fs, root = fs_path(set_root)
    keep = {f"{root}/{s['path']}" for s in manifest["shards"]}
    doomed = [path for path in fs.glob(f"{root}/layer=*/split=*/part-*.parquet") if path not in keep]
    doomed += [s for s in fs.glob(f"{root}/{layout.STAGING}/*") if s.rsplit("/", 1)[-1] != manifest["plan_id"]]
    if is_local(fs):  # temporary files left by a crashed writer (object stores leave none)
        doomed += [path for path in fs.glob(f"{root}/**/.*.tmp") if _older_than(path, TEMP_MAX_AGE)]
    removed = []
    for path in doomed:
        try:
            fs.rm(path, recursive=True)
            removed.append(path)
        except OSError:  # gone already, or a live writer added to it meanwhile
            continue
    return removed


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except FileNotFoundError:  # a live writer renamed it meanwhile
        return False
