"""Copy-on-write for an incremental plan (pipeline/incremental.py): a shard whose images
are all unchanged is the base version's, its files untouched; a shard that lost removed
or changed images is copied from the base's files without those rows. Neither decodes
nor infers an image."""

from __future__ import annotations

import io
import time

from tlfs.features import layout, versions
from tlfs.features.layout import ORIGINAL
from tlfs.features.leases import translate_missing
from tlfs.features.schema import read_parquet
from tlfs.features.storage import fs_path, sha256_bytes
from tlfs.features.writer import write_shard
from tlfs.pipeline.dataset_index import Reject
from tlfs.pipeline.plan import REUSE, Plan
from tlfs.pipeline.records import ShardFile, ShardRecord
from tlfs.pipeline.staging import files_present, save_record


def derive_shard(p: Plan, number: int, listing: versions.Listing | None = None) -> ShardRecord | None:
    """Shard ``number`` from the base version's files of the shard it comes from,
    keeping only the rows of its entries (reused as they are: the whole record). None if
    a base file is missing or damaged: then the shard is extracted from its images.
    ``listing``: the set listed once, where a reused shard's files are looked up."""
    origin = p.origins[number]
    if origin["kind"] == REUSE:
        record = p.reused_record(number)
        return record if files_present(p, record, listing) else None  # held by the plan: nothing to save
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    keep = pa.array(sorted(e.image_id for e in p.shard_entries(number)), pa.string())
    split = p.shards[number].split
    files, written = {}, 0
    with translate_missing(p.set_uri, p.plan_id):
        for key, info in origin["files"].items():
            found = versions.locate(p.set_uri, info["path"])
            if found is None:
                return None
            fs, path = fs_path(found)
            data = fs.cat_file(path)  # the changed shard's bytes: what an incremental run must read
            if sha256_bytes(data) != info["sha256"]:
                return None
            table = read_parquet(io.BytesIO(data))
            table = table.filter(pc.is_in(table.column("image_id"), value_set=keep))
            layer, view = info.get("layer", key), info.get("view", ORIGINAL)
            relative = layout.shard_path(layer, split, p.plan_id, number, view)
            done = write_shard(layout.staged_uri(p.set_uri, p.plan_id, relative), table, p.codec)
            files[key] = ShardFile(relative, done.rows, done.bytes, done.sha256, layer, view)
            written = done.rows
        record = ShardRecord(number, split, len(p.shard_entries(number)), written, len(origin["rejects"]),
                             tuple(Reject(**r) for r in origin["rejects"]), files,
                             seconds=round(time.perf_counter() - started, 3), derived=True)
        if not record.reconciles:
            return None  # the base's rows do not match its records: extract the images again
        save_record(p, record)
    return record
