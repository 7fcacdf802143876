"""``tlfs ls``, ``describe``, ``history``, ``vacuum`` and ``rm``: the store's sets and their versions."""

from __future__ import annotations

import json
import os
import sys

from tlfs.features.storage import is_relative_path
from tlfs.pipeline.config import Settings
from tlfs.pipeline.image_decode import FULL_DEPTH, bit_depth_of, depth_said
from tlfs.pipeline.cli.printing import absent, accuracy


def cmd_ls(args, settings: Settings) -> None:
    from tlfs import features

    table = features.list_sets(settings.store)
    if table.empty:
        where = settings.store
        if is_relative_path(where) and not os.path.exists(where):
            where += f" (no such folder in {os.getcwd()}: --store or TLFS_STORE names the store)"
        print(f"no committed feature sets in {where}")
        return None
    for row in table.itertuples():
        print(f"{row.dataset:<14} {row.backbone_version:<32} rows {row.rows:>7}  rejected {row.rejected:>4}  "
              f"layers {','.join(row.layers)}  splits {','.join(row.splits)}  {row.committed_at}")
    return None


def cmd_describe(args, settings: Settings) -> None:
    from tlfs import features

    from tlfs.pipeline.kept_checks import check_line, kept_summaries
    from tlfs.pipeline.saved_heads import head_summaries
    from tlfs.pipeline.sources.uris import recorded_uris

    info = features.describe(args.dataset, args.backbone, settings.store, version=args.version, as_of=args.as_of)
    info["heads"] = head_summaries(info["uri"])
    info["checks"] = kept_summaries(info["uri"])
    if args.json:
        print(json.dumps(info, indent=2))
        return None
    lineage = info["lineage"]
    print(f"feature set   {info['uri']}")
    print(f"version       {info.get('version', 1)}" + (f" (after version {info['parent_version']})" if info.get("parent_version") else "")
          + (f"  {_changes(info['changes'])}" if info.get("changes") else ""))
    print(f"backbone      {info['backbone_version']}  (onnx sha256 {lineage['onnx_sha256'][:16]}...)")
    print(f"weights       {lineage['weights']['source']}  sha256 {lineage['weights']['sha256'][:16]}...")
    print(f"computed      {_computed(lineage)}")
    print(f"committed     {info['committed_at']}  plan {info['plan_id']}  code {lineage['code']}")
    print(f"classes       {', '.join(info['classes'])}")
    print("layers        " + ", ".join(f"{k} ({v}-d)" for k, v in info["layers"].items()))
    if (depth := bit_depth_of(lineage)) != FULL_DEPTH:
        print(f"decoded       {depth_said(depth)} (--bit-depth {depth})")
    for split, c in info["counts"].items():
        print(f"split {split:<8} read {c['read']}  written {c['written']}  rejected {c['rejected']}")
    files = recorded_uris(lineage["sources"])
    for s, uri in zip(lineage["sources"], files):
        digest = s["checksum"].get("sha256") or s["checksum"].get("listing_sha256")
        print(f"source        {uri}  [{s['format']}]  {s['images']} images  sha256 {digest[:16]}...")
    if lineage.get("source_uris") and lineage["source_uris"] != files:  # a glob or a brace list, matched again by later runs
        print(f"given as      {', '.join(lineage['source_uris'])}  (what a later run reads where no --source is given)")
    for r in info["rejects"][:20]:
        print(f"rejected      {r['image_id']}: {r['reason']}")
    if len(info["rejects"]) > 20:
        print(f"rejected      ... and {len(info['rejects']) - 20} more (--json lists all)")
    for head in info["heads"]:
        print(f"head          {_head_line(head, info)}")
    for name, summary in info["checks"].items():
        print(f"check         {name:<13} {check_line(name, summary)}")
    return None


def _computed(lineage: dict) -> str:
    """Where and in what precision the features were computed, and the graph file's digest
    where it is a variant of the exported one (fp16, int8)."""
    runtime = lineage["runtime"]
    line = f"on {runtime['device']}, {runtime['precision']}"
    if lineage.get("onnx_file_sha256", lineage["onnx_sha256"]) != lineage["onnx_sha256"]:
        line += f"  (its {runtime['precision']} graph, sha256 {lineage['onnx_file_sha256'][:16]}...)"
    return line


def _head_line(head: dict, info: dict) -> str:
    """A saved head as ``describe`` lists it: accuracies, views, the version it was fitted on
    where that is not the one described, and its shipped classifier."""
    line = (f"{head['name']:<22} test {accuracy(head['test_accuracy'])}  validation "
            f"{accuracy(head['validation_accuracy'])}  balanced {accuracy(head['test_balanced_accuracy'])}  "
            f"views {'+'.join(head['views'])}")
    if head["plan_id"] != info["plan_id"]:
        line += f"  (fitted on version {head['version']})"
    if head["classifier_bytes"] is not None:
        line += f"  classifier.onnx {head['classifier_bytes'] / 1e6:.1f} MB"
    return line


def _changes(changes: dict) -> str:
    from tlfs.pipeline.extract import describe_changes

    return describe_changes(changes)


def cmd_history(args, settings: Settings) -> None:
    from tlfs import features

    table = features.history(args.dataset, args.backbone, settings.store)
    for row in table.itertuples():
        what = ("vacuumed " + row.vacuumed_at) if row.vacuumed_at else f"{row.shard_files} shard files"
        counts = "  ".join(f"{k} {'-' if absent(v) else int(v)}" for k, v in
                           (("added", row.added), ("changed", row.changed), ("removed", row.removed), ("reused", row.reused)))
        base = "from scratch" if absent(row.base_version) else f"on version {int(row.base_version)}"
        print(f"version {row.version:<4} {row.committed_at}  rows {row.rows:>7}  {base:<14} {counts}  {what}")
    return None


def cmd_vacuum(args, settings: Settings) -> dict:
    from tlfs.pipeline.extract import vacuum

    report = vacuum(features_set_uri(args, settings), settings.retention())
    print(f"kept versions {', '.join(map(str, report['versions_kept']))}; vacuumed "
          f"{', '.join(map(str, report['versions_vacuumed'])) or 'none'}; removed {report['files_removed']} files "
          f"({report['bytes_freed'] / 1e6:.1f} MB) and {report['superseded_plans_removed']} superseded plans' staging",
          file=sys.stderr)
    return report


def cmd_rm(args, settings: Settings) -> dict:
    from tlfs.pipeline.errors import PipelineError
    from tlfs.pipeline.maintenance import remove_set

    report = remove_set(features_set_uri(args, settings), confirmed=args.yes)
    held = (f"{report['set_uri']}: version {report['version']}, {report['rows']:,} rows, {report['files']:,} files "
            f"({report['bytes'] / 1e6:.1f} MB, its heads and checks included)")
    if not report["removed"]:
        raise PipelineError(f"{held} would be deleted: run it again with --yes to delete it")
    print(f"deleted {held}", file=sys.stderr)
    return report


def features_set_uri(args, settings: Settings) -> str:
    from tlfs import features

    return features.find_set(args.dataset, args.backbone, settings.store)[0]

