"""Committing a plan: its shards' records checked against one listing of the set (each
file there, with the size its writer took from the bytes it wrote; no file is read, so a
commit costs what the run added, not the set's size), the manifest composed from the
records, and published as the set's next version (features/manifest.py)."""

from __future__ import annotations

from typing import Callable

from tlfs.features import versions
from tlfs.features.errors import FilesMissing, PlanReplaced, StoreError, WriteFailed
from tlfs.features.leases import LeaseTerms, hold, require_plan
from tlfs.features.lock import commit_lock
from tlfs.features.manifest import Manifest, Published, publish
from tlfs.features.versions import Retention
from tlfs.pipeline.errors import NothingReadable, PipelineError
from tlfs.pipeline.image_decode import FULL_DEPTH, decode_rule
from tlfs.pipeline.lineage import code_version
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.planning import load_plan
from tlfs.pipeline.records import Changes, ShardRecord
from tlfs.pipeline.staging import gather_records, saved_record


def _not_extracted(p: Plan, number: int) -> PipelineError:
    return PipelineError(f"cannot commit {p.set_uri}: shard {number} is not extracted (plan {p.plan_id}), "
                         "or its files are damaged or were removed; run the extraction again "
                         "(it re-extracts only what is missing)")


def commit(p: Plan, records: list[ShardRecord] | None = None, log: Callable[[str], None] = print,
           retention: Retention = Retention()) -> Published:
    """Under the set's commit lock: check that the plan is still there and every shard's
    files are (``records``: as the run that made them holds them; by default read back
    from staging), then publish the manifest as the set's next version (none if the
    newest already holds exactly these rows: ``unchanged``), and apply ``retention``."""
    with commit_lock(p.set_uri):
        require_plan(p.set_uri, p.plan_id)
        given = {r.shard: r for r in records} if records is not None else None
        listing = versions.Listing.with_newest(p.set_uri, known=p.newest)
        checked = []
        for number in range(len(p.shards)):
            record = given.get(number) if given is not None else saved_record(p, number, listing)
            if record is None:
                raise _not_extracted(p, number)
            checked.append(record)
        manifest = manifest_of(p, checked)
        _refuse_a_set_of_no_row(p, manifest)
        try:
            committed = publish(p.set_uri, manifest.to_json(), retention,
                                check=lambda: require_plan(p.set_uri, p.plan_id), listing=listing)
        except FilesMissing as exc:  # checked in the listing, before anything is written
            raise _not_extracted(p, exc.bad[0]["shard"]) from None
        except PlanReplaced:
            raise
        except StoreError as exc:  # a file vanished while it was being moved into place
            raise PipelineError(f"cannot commit {p.set_uri}: {exc}; run the extraction again "
                                "(it re-extracts only what is missing)") from None
        if not committed.unchanged:
            try:
                gather_records(p, checked, listing)
            except WriteFailed as exc:  # committed all the same: the records stay as a crash here leaves them
                log(f"version {committed.version} of {p.set_uri} is committed; its shards' records stay one file "
                    f"each ({exc})")
    if committed.unchanged:
        log(f"{p.set_uri} is unchanged: version {committed.version} already holds these {committed.rows} rows")
        return committed
    log(f"committed version {committed.version} of {p.set_uri}: {committed.rows} rows, "
        f"{committed.shard_files} shard files, {committed.rejected} rejected; " + describe_changes(committed.changes))
    return committed


def _refuse_a_set_of_no_row(p: Plan, manifest: Manifest, examples: int = 3) -> None:
    """Where every image the plan read was rejected, nothing is committed: the error names how
    many and the first rejects' reasons, which the set would otherwise have kept alone."""
    if any(c["written"] for c in manifest.counts.values()):
        return
    read = sum(c["read"] for c in manifest.counts.values())
    shown = "; ".join(f"{r['image_id']}: {r['reason']}" for r in manifest.rejects[:examples])
    more = f" (and {len(manifest.rejects) - examples} more)" if len(manifest.rejects) > examples else ""
    raise NothingReadable(f"nothing to commit to {p.set_uri}: all {read} images of {p.dataset} were rejected: "
                          f"{shown}{more}")


def describe_changes(changes: dict) -> str:
    """One line: what a version (its manifest's ``changes``) changed against its base."""
    return Changes.from_json(changes).describe()


def commit_task(set_uri: str, plan_id: str, records: list[dict] | None = None, lease: LeaseTerms = LeaseTerms(),
                log: Callable[[str], None] = print, retention: Retention = Retention()) -> Published:
    """The commit as a task of its own (after a DAG's shard tasks, whose records, as
    JSON, it is handed): under a lease on the plan."""
    with hold(set_uri, plan_id, lease):
        typed = [ShardRecord.from_json(r) for r in records] if records is not None else None
        return commit(load_plan(set_uri, plan_id), typed, log=log, retention=retention)


def manifest_of(p: Plan, records: list[ShardRecord]) -> Manifest:
    """The manifest of plan ``p`` from its shards' records."""
    counts = {split: {"read": 0, "written": 0, "rejected": 0} for split in p.splits}
    rejects = [{"image_id": r.image_id, "source": r.source, "reason": r.reason} for r in p.index_rejects]
    for r in p.index_rejects:  # refused while indexing: read, and rejected
        split = r.image_id.split("/")[0]
        if split in counts:
            counts[split]["read"] += 1
            counts[split]["rejected"] += 1
    shards = []
    for record in records:
        c = counts[record.split]
        c["read"] += record.read
        c["written"] += record.written
        c["rejected"] += record.rejected
        rejects.extend({"image_id": r.image_id, "source": r.source, "reason": r.reason} for r in record.rejects)
        shards.extend(record.manifest_rows)
    card = p.artifact.card
    return Manifest(
        dataset=p.dataset, backbone=p.backbone, backbone_version=p.backbone_version, plan_id=p.plan_id,
        layers=p.layer_dims, views=list(p.views), splits=list(p.splits), classes=list(p.classes), counts=counts,
        changes=p.changes.to_json() if p.changes else {}, shards=shards, rejects=rejects,
        lineage={
            "onnx_sha256": card["onnx_sha256"],
            "runtime": p.runtime.to_json(),  # device, provider, precision, batch, fixed shapes
            "onnx_file_sha256": p.artifact.graph_sha256(p.runtime.precision),
            "model_uri": p.artifact.uri,
            "weights": card["weights"],
            "parent": card.get("parent"),
            "sources": [{"uri": s.uri, "format": s.format, "checksum": s.checksum, "images": s.images,
                         **({"options": s.options} if s.options else {})} for s in p.sources],
            **({"source_uris": list(p.source_uris)} if p.source_uris else {}),  # as given: globs unexpanded
            "limit": p.limit,
            "base": p.base,  # the version whose unchanged images were reused
            "preprocessing": {**card["preprocessing"], "decode": decode_rule(p.bit_depth), "feature_dtype": "float16",
                              **({"bit_depth": p.bit_depth} if p.bit_depth != FULL_DEPTH else {})},
            "code": dict(code_version()),  # a copy: the value is cached
        })
