"""Looking after a committed set: ``tlfs verify`` (every byte of every file against the
manifest's sha256; with ``repair``, the damaged shards extracted again and committed),
``tlfs vacuum`` (the versions a retention drops, and the files only they used) and
``tlfs rm`` (the whole set)."""

from __future__ import annotations

import time
from typing import Callable

from tlfs.features import layout, versions
from tlfs.features.leases import hold, live_bases, live_plans
from tlfs.features.lock import commit_lock
from tlfs.features.manifest import damaged_shards, read_manifest, remove_superseded
from tlfs.features.storage import fs_path, is_local
from tlfs.features.versions import Retention
from tlfs.pipeline.commit import commit
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.planning import load_plan
from tlfs.pipeline.runner import run_shards
from tlfs.pipeline.staging import forget_record


def verify(set_uri: str, repair: bool = False, device: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Check every shard of a committed set against the manifest's checksums; with
    ``repair``, re-extract only the shards with a damaged file, on the set's own runtime
    (a ``device`` other than the set's is refused: a set never mixes them), and commit
    again."""
    from tlfs.features.feature_set import FeatureSet  # pandas: only where a set is verified

    started = time.perf_counter()
    committed = FeatureSet(set_uri, read_manifest(set_uri))
    bad = damaged_shards(set_uri, committed.manifest)
    report = {
        "set_uri": set_uri,
        "shard_files": committed.shard_files,
        "bad": [{"path": b["path"], "shard": b["shard"], "reason": b["reason"]} for b in bad],
        "seconds": round(time.perf_counter() - started, 2),
        "repaired": [],
    }
    if bad and repair:
        numbers = sorted({b["shard"] for b in bad})
        with hold(set_uri, committed.plan_id) as held:
            p = load_plan(set_uri, committed.plan_id)
            if device and device != p.runtime.device:
                raise PipelineError(f"{set_uri} was extracted on {p.runtime.device} ({p.runtime.precision}); repairing it "
                                    f"on {device} would mix devices in one set: repair with --device {p.runtime.device}, "
                                    "or extract it anew on the other device")
            fs, _ = fs_path(set_uri)
            for damaged in bad:  # its new file takes the same name
                found = versions.locate(set_uri, damaged["path"])
                if found is not None:
                    fs.rm(fs_path(found)[1])
            for number in numbers:
                forget_record(p, number)
                log(f"re-extracting shard {number}")
                run_shards(p, [number], derive=False)  # from its images, not from a possibly damaged base file
                held.check()
            commit(p, log=log)
        report["repaired"] = numbers
        report["bad_after_repair"] = len(damaged_shards(set_uri, read_manifest(set_uri)))
    return report


def vacuum(set_uri: str, retention: Retention) -> dict:
    """``tlfs vacuum``: under the commit lock, drop the versions ``retention`` does not
    keep and delete the files only they used (never a file of a kept version, nor of a
    version a live run builds on), and the superseded plans' staging that commits set aside."""
    with commit_lock(set_uri):
        done = versions.vacuum(set_uri, read_manifest(set_uri), retention, live_bases(set_uri))
    return {**done, "superseded_plans_removed": remove_superseded(set_uri)}


def remove_set(set_uri: str, confirmed: bool) -> dict:
    """``tlfs rm``: what one feature set holds (its versions, rows, files and bytes, its heads
    and checks included) and, where ``confirmed``, all of it deleted under the commit lock:
    the commit point first, so that a reader finds no set from then on, then every file.
    Refused, with nothing deleted, while a run holds a live lease on one of its plans."""
    manifest = read_manifest(set_uri)  # NotCommitted where there is no set
    fs, root = fs_path(set_uri)
    sizes = {path: info.get("size") or 0 for path, info in fs.find(root, detail=True).items()}
    report = {"set_uri": set_uri, "version": manifest["version"],
              "rows": sum(split["written"] for split in manifest["counts"].values()),
              "files": len(sizes), "bytes": sum(sizes.values()), "removed": False}
    if not confirmed:
        return report
    with commit_lock(set_uri):
        live = live_plans(set_uri)
        if live:
            raise PipelineError(f"{set_uri}: a run is working on it (plan {', '.join(sorted(live))} holds a live lease); "
                                "nothing removed: let the run end, or stop it and let its lease run out, then run tlfs rm again")
        fs.rm_file(f"{root}/{layout.MANIFEST}")  # the commit point: from here on no reader finds the set
        fs.rm(root, recursive=True)
    if is_local(fs):  # the dataset's folder, where this was its last set (object stores have no folders)
        parent = root.rsplit("/", 1)[0]
        if fs.exists(parent) and not fs.ls(parent):
            fs.rmdir(parent)
    return {**report, "removed": True}
