"""A plan's staging, as the runner sees it: each shard's result record, and whether a
shard is done (its record saved and every file it names there, with its size)."""

from __future__ import annotations

from tlfs.features import layout, versions
from tlfs.features.storage import atomic_write_json, fs_path, read_json
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.records import ShardRecord


def save_record(p: Plan, record: ShardRecord) -> None:
    atomic_write_json(layout.record_uri(p.set_uri, p.plan_id, record.shard), record.to_json())


def forget_record(p: Plan, number: int) -> None:
    """Remove shard ``number``'s record, so that the shard is extracted again."""
    fs, path = fs_path(layout.record_uri(p.set_uri, p.plan_id, number))
    if fs.exists(path):
        fs.rm(path)


def files_present(p: Plan, record: ShardRecord) -> bool:
    """Whether every file ``record`` names is in the set (staged, in place or retired) with its size."""
    fs, _ = fs_path(p.set_uri)
    for info in record.files.values():
        found = versions.locate(p.set_uri, info.path)
        try:
            if found is None or fs.size(fs_path(found)[1]) != info.bytes:
                return False
        except FileNotFoundError:
            return False
    return True


def saved_record(p: Plan, number: int) -> ShardRecord | None:
    """Shard ``number``'s record as saved in staging, or None."""
    try:
        return ShardRecord.from_json(read_json(layout.record_uri(p.set_uri, p.plan_id, number)))
    except FileNotFoundError:
        return None


def shard_done(p: Plan, number: int) -> ShardRecord | None:
    """The shard's result record, if it and every file it names are there."""
    record = saved_record(p, number)
    return record if record is not None and files_present(p, record) else None
