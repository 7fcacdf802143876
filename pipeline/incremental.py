"""Incremental extraction: a plan over a changed source reuses what the newest version
of the set already holds.

An image is the same when its id and its fingerprint (``Entry.fingerprint``: a hash of
its bytes, a zip's CRC, an object's ETag, a file's size and mtime) are. Against the
newest version (the *base*: same backbone version, layers, views, device and precision,
and a plan whose per-image records are still in staging), each of its shards becomes:

* **reused**: every image in it is unchanged: its files are the new version's too,
  untouched (its record is copied; nothing is read);
* **derived**: some of its images were removed or changed: its files are copied without
  those rows (copy-on-write, as table formats do); no image is decoded or inferred;
* **dropped**: none of its images remain.

The new and changed images are cut into new shards and extracted as usual. A rejected
image whose fingerprint did not change stays rejected without being read again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from tlfs.features import layout
from tlfs.features.storage import exists, read_json, read_json_if_exists
from tlfs.models.runtime import Runtime
from tlfs.pipeline.dataset_index import DatasetIndex, Entry
from tlfs.pipeline.image_decode import bit_depth_of, decoded_alike
from tlfs.pipeline.plan import DERIVE, REUSE, Shard
from tlfs.pipeline.records import Changes, ShardRecord
from tlfs.pipeline.staging import entries_reader, gathered_records


@dataclass(frozen=True)
class BaseShard:
    number: int
    split: str
    entries: list[Entry]  # every image the shard read, rejected ones included
    record: dict  # its result record: files, read / written / rejected, rejects


@dataclass(frozen=True)
class Base:
    """The newest committed version, as an incremental plan sees it."""

    version: int
    plan_id: str
    shards: list[BaseShard]

    def to_json(self) -> dict:
        return {"version": self.version, "plan_id": self.plan_id}


def load_base(set_uri: str, manifest: dict | None, runtime: Runtime, layer_dims: dict[str, int],
              views: tuple[str, ...], bit_depth: int, graph_sha256: str,
              log: Callable[[str], None] = print) -> Base | None:
    """The newest version of the set at ``set_uri`` (``manifest``: its manifest, None where
    it has none), if a plan with these settings can reuse it; else None, saying why.
    ``graph_sha256``: the graph file this run computes with."""
    from tlfs.features.feature_set import FeatureSet

    if manifest is None:
        return None
    newest = FeatureSet(set_uri, manifest)
    version, ran = newest.version, newest.lineage["runtime"]
    reasons = []
    if Runtime(**{k: v for k, v in ran.items() if k != "provider"}).identity() != runtime.identity():
        reasons.append(f"it ran on {ran['device']} ({ran['precision']}), this run on {runtime.device} ({runtime.precision})")
    elif newest.lineage.get("onnx_file_sha256", graph_sha256) != graph_sha256:
        # a variant built again (another model store, another quantizer) computes other features
        reasons.append(f"its {ran['precision']} graph was another file (sha256 {newest.lineage['onnx_file_sha256'][:12]}..., "
                       f"this run's {graph_sha256[:12]}...)")
    if newest.layers != layer_dims:
        reasons.append(f"it holds layers {', '.join(newest.layers)}, this run asks for {', '.join(layer_dims)}")
    if newest.views != list(views):
        reasons.append(f"it holds views {', '.join(newest.views)}, this run {', '.join(views)}")
    if not decoded_alike(newest.lineage.get("preprocessing", {}).get("decode"), bit_depth):
        then = bit_depth_of(newest.lineage)
        reasons.append(f"its greyscale 16-bit images were scaled as {then}-bit, this run's as {bit_depth}-bit "
                       "(--bit-depth)" if then != bit_depth else
                       "its images were decoded by another rule (its lineage's preprocessing.decode)")
    plan_id = newest.plan_id
    if not reasons and not exists(layout.plan_uri(set_uri, plan_id)):
        reasons.append("its plan's records are gone from staging")
    if reasons:
        log(f"extracting every image: version {version} of {set_uri} cannot be reused ({'; '.join(reasons)})")
        return None
    plan = read_json(layout.plan_uri(set_uri, plan_id))
    read_entries = entries_reader(set_uri, plan, whole=True)
    gathered = gathered_records(set_uri, plan_id)  # one request; a plan committed before gathering: a file each
    origins = plan.get("origins", {})
    shards = []
    for shard in plan["shards"]:
        number = shard["shard"]
        rows = read_entries(number)
        record = gathered.get(number) if gathered is not None else \
            read_json_if_exists(layout.record_uri(set_uri, plan_id, number))
        origin = origins.get(str(number))
        if record is None and origin and origin["kind"] == REUSE:  # reused as it is: the plan holds its record
            record = ShardRecord.reused_from(origin["record"], number).to_json()
        if record is None or any(len(row) < Entry.ROW_FIELDS_WITH_FINGERPRINT for row in rows):
            log(f"extracting every image: version {version} of {set_uri} has no per-image fingerprints "
                "(it was extracted before incremental runs)")
            return None
        shards.append(BaseShard(number, shard["split"], [Entry(*row) for row in rows], record))
    return Base(version, plan_id, shards)


@dataclass
class Increment:
    """What a plan over ``index`` does against ``base``: its shards (reused and derived
    ones first, in the base's order, then new ones), their entries and origins, and
    the counts of what changed."""

    shards: list[Shard]
    entries: dict[int, list[Entry]]
    origins: dict[int, dict]  # shard number -> {"kind": reuse|derive, ...}; absent: extract
    changes: Changes
    new_entries: list[Entry]


def diff(index: DatasetIndex, base: Base) -> Increment:
    """Match ``index`` against ``base``'s shards (see the module's note). The shards of
    the new and changed images are left to the caller (``new_entries``), which cuts them
    the usual way after these."""
    target = {e.image_id: e for e in index.entries}
    shards: list[Shard] = []
    entries: dict[int, list[Entry]] = {}
    origins: dict[int, dict] = {}
    matched: set[str] = set()
    in_base: set[str] = set()
    for old in base.shards:
        kept = []
        for e in old.entries:
            in_base.add(e.image_id)
            now = target.get(e.image_id)
            if now is not None and e.fingerprint and now.fingerprint == e.fingerprint and now.label_name == e.label_name:
                kept.append(now)
        if not kept:
            continue
        number = len(shards)
        matched.update(e.image_id for e in kept)
        shards.append(Shard(number, old.split, 0, len(kept)))
        entries[number] = kept
        if len(kept) == len(old.entries):
            origins[number] = {"kind": REUSE, "base_shard": old.number, "record": old.record}
        else:
            keep = {e.image_id for e in kept}
            origins[number] = {"kind": DERIVE, "base_shard": old.number, "files": old.record["files"],
                               "rejects": [r for r in old.record["rejects"] if r["image_id"] in keep]}
    new_entries = [e for e in index.entries if e.image_id not in matched]
    changed = sum(1 for e in new_entries if e.image_id in in_base)
    changes = Changes(base.version, len(new_entries) - changed, changed, len(in_base - set(target)), len(matched),
                      shards_reused=sum(o["kind"] == REUSE for o in origins.values()),
                      shards_derived=sum(o["kind"] == DERIVE for o in origins.values()))
    return Increment(shards, entries, origins, changes, new_entries)


def left_out_by_sample(base: Base, sampled: DatasetIndex, source: DatasetIndex) -> int:
    """How many of ``base``'s images a ``sampled`` index leaves out that the ``source``
    (the same index before sampling) still holds: what a limited run would remove for no
    reason but its limit."""
    kept = {e.image_id for e in sampled.entries}
    held = {e.image_id for e in source.entries}
    return sum(1 for shard in base.shards for e in shard.entries if e.image_id not in kept and e.image_id in held)


def fingerprints_digest(entries: list[Entry]) -> str:
    """One digest of every image's id and fingerprint (part of a plan's identity)."""
    lines = "\n".join(f"{e.image_id}\t{e.fingerprint}" for e in entries)
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()
