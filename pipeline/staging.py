"""A plan's staging, as the runner sees it: each shard's result record, and whether a
shard is done (its record saved, or held by the plan for a reused shard, and every file
it names there, with its size). Only shards a run wrote files for have a record saved,
so a plan's staging holds what it changed, plus its plan and entries."""

from __future__ import annotations

import gzip
import json
import os
from typing import Callable

from tlfs.features import layout, versions
from tlfs.features.leases import live_leases
from tlfs.features.storage import atomic_write_bytes, atomic_write_json, fs_path, is_local, read_json, read_range
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.records import ShardRecord


ENTRIES_AT = "entries_at"  # plan.json's key: each shard's [offset, length] in its file of entries
ENTRIES_FORMAT = "entries_format"  # plan.json's key: "jsonl.gz" (absent: a plan saved uncompressed)
GZIP_LEVEL = 1  # the fastest: the entries repeat themselves (ids, classes), so even it shrinks them about 6x


def save_entries(p: Plan) -> dict:
    """Write every shard's entries, a JSON line per shard, each compressed as a gzip member
    of its own, into one file (one object on a store: a plan of a million images writes
    one, not one per shard; members concatenated are a gzip file, so ``zcat`` shows the
    whole); returns what ``plan.json`` adds so that a task finds its shard's member
    (:data:`ENTRIES_AT`). Compressed, the file costs planning less to write, a shard task
    less to read, and the commit that supersedes the plan less to remove."""
    members = [gzip.compress(_line(p.entries_json(n)), GZIP_LEVEL, mtime=0) for n in range(len(p.shards))]
    at, offset = [], 0
    for member in members:
        at.append([offset, len(member)])
        offset += len(member)
    atomic_write_bytes(layout.entries_uri(p.set_uri, p.plan_id), b"".join(members))
    return {ENTRIES_AT: at, ENTRIES_FORMAT: "jsonl.gz"}


def entries_reader(set_uri: str, plan: dict, whole: bool = False) -> Callable[[int], list]:
    """``read(number)``: shard ``number``'s entry rows of the saved ``plan`` (its JSON):
    the bytes of its member alone, or with ``whole`` the file read once for every shard
    (a plan saved before ``entries.jsonl.gz``: its uncompressed ``entries.jsonl``, or
    before that its shard's own file). Raises FileNotFoundError where they are gone."""
    plan_id = plan["plan_id"]
    if ENTRIES_AT not in plan:
        return lambda number: read_json(layout.shard_entries_uri(set_uri, plan_id, number))
    compressed = plan.get(ENTRIES_FORMAT) == "jsonl.gz"
    at = plan[ENTRIES_AT]
    uri = (layout.entries_uri if compressed else layout.plain_entries_uri)(set_uri, plan_id)
    rows = (lambda data: json.loads(gzip.decompress(data))) if compressed else json.loads
    if whole:
        fs, path = fs_path(uri)
        data = fs.cat_file(path)
        return lambda number: rows(data[at[number][0]:at[number][0] + at[number][1]])
    return lambda number: rows(read_range(uri, *at[number]))


def gather_records(p: Plan, records: list[ShardRecord], listing: versions.Listing) -> None:
    """After ``p``'s commit (the caller holds a lease on it): the records its runs saved,
    one file instead of one per shard, so that the next plan reads its base's records in
    one request, and the commit that supersedes ``p`` removes a few files, not one per
    shard. The single records are removed only while no other run works on the plan: one
    that looked for the gathered file before it was written would not look again, and
    would extract its shards anew. A crash in between leaves both, which agree.
    ``listing``: the set as the commit listed it, which shows the single records there are."""
    saved = [r for r in records if not r.reused]  # a reused shard's record is the plan's
    atomic_write_bytes(layout.records_uri(p.set_uri, p.plan_id),
                       _lines(r.with_(skipped=False).to_json() for r in sorted(saved, key=lambda r: r.shard)))
    if live_leases(p.set_uri, p.plan_id) > 1:  # another run of the plan: the superseding commit removes them
        return
    fs, _ = fs_path(p.set_uri)
    single = [fs_path(uri)[1] for uri in (layout.record_uri(p.set_uri, p.plan_id, r.shard) for r in saved)
              if _relative(p, uri) in listing.others]
    try:
        fs.rm(single)  # one bulk request on an object store
    except FileNotFoundError:  # removed meanwhile: the superseding commit removes what is left
        pass
    if is_local(fs):  # its emptied folder too (an object store has none)
        try:
            os.rmdir(fs_path(layout.staging_uri(p.set_uri, p.plan_id))[1] + f"/{layout.RECORDS}")
        except OSError:  # not empty: a run of the plan saved a record meanwhile; or none
            pass


def _line(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _lines(records) -> bytes:
    return b"".join(map(_line, records))


def gathered_records(set_uri: str, plan_id: str) -> dict[int, dict] | None:
    """A committed plan's gathered records (JSON) by shard (a shard reused as it is has
    none: the plan holds it); None where its commit gathered none (a plan not committed,
    or committed before records were gathered: a file per shard)."""
    fs, path = fs_path(layout.records_uri(set_uri, plan_id))
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    return {int(record["shard"]): record for record in map(json.loads, data.splitlines())}


def save_record(p: Plan, record: ShardRecord) -> None:
    atomic_write_json(layout.record_uri(p.set_uri, p.plan_id, record.shard), record.to_json())


def forget_record(p: Plan, number: int) -> None:
    """Remove shard ``number``'s record (saved, or gathered by the plan's commit), so that
    the shard is extracted again."""
    fs, path = fs_path(layout.record_uri(p.set_uri, p.plan_id, number))
    if fs.exists(path):
        fs.rm(path)
    gathered = gathered_records(p.set_uri, p.plan_id)
    if gathered and number in gathered:
        del gathered[number]
        atomic_write_bytes(layout.records_uri(p.set_uri, p.plan_id), _lines(gathered.values()))
    p.gathered.pop("records", None)


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
    """Shard ``number``'s record as saved in staging (a shard extracted or derived; after
    the plan's commit, among its gathered records), or as the plan holds it (a base shard
    reused as it is), or None. ``listing``: the set listed once, so that a record it does
    not show is not asked for."""
    if listing is None or _relative(p, layout.record_uri(p.set_uri, p.plan_id, number)) in listing.others:
        try:
            return ShardRecord.from_json(read_json(layout.record_uri(p.set_uri, p.plan_id, number)))
        except FileNotFoundError:
            pass
    if listing is None or _relative(p, layout.records_uri(p.set_uri, p.plan_id)) in listing.others:
        if "records" not in p.gathered:  # read once per plan: a committed plan run again finds every shard done
            p.gathered["records"] = gathered_records(p.set_uri, p.plan_id) or {}
        gathered = p.gathered["records"]
        if number in gathered:
            return ShardRecord.from_json(gathered[number])
    return p.reused_record(number)


def shard_done(p: Plan, number: int, listing: versions.Listing | None = None) -> ShardRecord | None:
    """The shard's result record, if it and every file it names are there (in ``listing``
    where given: the set listed once, for many shards)."""
    record = saved_record(p, number, listing)
    return record if record is not None and files_present(p, record, listing) else None


def _relative(p: Plan, uri: str) -> str:
    return uri[len(p.set_uri.rstrip("/")) + 1:]
