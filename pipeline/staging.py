"""A plan's staging, as the runner sees it: each shard's result record, and whether a
shard is done (its record saved, or held by the plan for a reused shard, and every file
it names there, with its size). Only shards a run wrote files for have a record saved,
so a plan's staging holds what it changed, plus its plan and entries."""

from __future__ import annotations

import json
from typing import Callable

from tlfs.features import layout, versions
from tlfs.features.storage import atomic_write_bytes, atomic_write_json, fs_path, read_json, read_range
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.records import ShardRecord


ENTRIES_AT = "entries_at"  # plan.json's key: each shard's [offset, length] in entries.jsonl


def save_entries(p: Plan) -> dict:
    """Write every shard's entries, a JSON line per shard, into one file (one object on a
    store: a plan of a million images writes one, not one per shard); returns what
    ``plan.json`` adds so that a task finds its shard's line (:data:`ENTRIES_AT`)."""
    lines = [json.dumps(p.entries_json(n), separators=(",", ":")).encode() + b"\n" for n in range(len(p.shards))]
    at, offset = [], 0
    for line in lines:
        at.append([offset, len(line)])
        offset += len(line)
    atomic_write_bytes(layout.entries_uri(p.set_uri, p.plan_id), b"".join(lines))
    return {ENTRIES_AT: at}


def entries_reader(set_uri: str, plan: dict, whole: bool = False) -> Callable[[int], list]:
    """``read(number)``: shard ``number``'s entry rows of the saved ``plan`` (its JSON):
    the bytes of its line alone, or with ``whole`` the file read once for every shard (a
    plan saved before ``entries.jsonl``: its shard's own file). Raises FileNotFoundError
    where they are gone."""
    plan_id = plan["plan_id"]
    if ENTRIES_AT not in plan:
        return lambda number: read_json(layout.shard_entries_uri(set_uri, plan_id, number))
    at, uri = plan[ENTRIES_AT], layout.entries_uri(set_uri, plan_id)
    if whole:
        fs, path = fs_path(uri)
        data = fs.cat_file(path)
        return lambda number: json.loads(data[at[number][0]:at[number][0] + at[number][1]])
    return lambda number: json.loads(read_range(uri, *at[number]))


def save_record(p: Plan, record: ShardRecord) -> None:
    atomic_write_json(layout.record_uri(p.set_uri, p.plan_id, record.shard), record.to_json())


def forget_record(p: Plan, number: int) -> None:
    """Remove shard ``number``'s record, so that the shard is extracted again."""
    fs, path = fs_path(layout.record_uri(p.set_uri, p.plan_id, number))
    if fs.exists(path):
        fs.rm(path)


def files_present(p: Plan, record: ShardRecord, listing: versions.Listing | None = None) -> bool:
    """Whether every file ``record`` names is in the set (staged, in place or retired) with
    its size: looked up in ``listing`` (the set listed once) where given, else file by file."""
    if listing is not None:
        return not listing.missing([f.to_json() for f in record.files.values()])
    fs, _ = fs_path(p.set_uri)
    for info in record.files.values():
        found = versions.locate(p.set_uri, info.path)
        try:
            if found is None or fs.size(fs_path(found)[1]) != info.bytes:
                return False
        except FileNotFoundError:
            return False
    return True


def saved_record(p: Plan, number: int, listing: versions.Listing | None = None) -> ShardRecord | None:
    """Shard ``number``'s record as saved in staging (a shard extracted or derived), or as
    the plan holds it (a base shard reused as it is), or None. ``listing``: the set listed
    once, so that a record it does not show is not asked for."""
    if listing is not None and _relative(p, layout.record_uri(p.set_uri, p.plan_id, number)) not in listing.others:
        return p.reused_record(number)
    try:
        return ShardRecord.from_json(read_json(layout.record_uri(p.set_uri, p.plan_id, number)))
    except FileNotFoundError:
        return p.reused_record(number)


def shard_done(p: Plan, number: int, listing: versions.Listing | None = None) -> ShardRecord | None:
    """The shard's result record, if it and every file it names are there (in ``listing``
    where given: the set listed once, for many shards)."""
    record = saved_record(p, number, listing)
    return record if record is not None and files_present(p, record, listing) else None


def _relative(p: Plan, uri: str) -> str:
    return uri[len(p.set_uri.rstrip("/")) + 1:]
