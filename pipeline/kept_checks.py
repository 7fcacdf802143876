"""Checks of a set kept beside its heads for ``tlfs report``: the near-copies between its
splits (``duplicates --save``) and the labels that look wrong (``label-issues --save``), each
as ``_heads/<name>.parquet`` (its table), ``<name>.json`` (what it comes to) and, where one
was drawn, ``<name>.png`` (its sheet of images). The ``fit_heads`` DAG keeps both after every
fit."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tlfs.features import layout
from tlfs.features.storage import fs_path, read_json, read_json_if_exists

NEAR_COPIES = "near_copies"  # tlfs duplicates --save
LABEL_ISSUES = "label_issues"  # tlfs label-issues --save
CHECKS = (NEAR_COPIES, LABEL_ISSUES)


@dataclass(frozen=True)
class KeptCheck:
    """Where a kept check's files lie (``sheet`` None where none was drawn)."""

    summary: dict
    table: str
    sheet: str | None


def keep_check(set_uri: str, name: str, table, summary: dict, sheet: bytes | None = None) -> str:
    """Keep a check's ``table`` (a pandas frame), ``summary`` and ``sheet`` (PNG bytes) beside
    the set's heads as ``name``, each whole or not at all, the summary last (never seen
    without its table); without a sheet, an older one is removed (it would show another
    check's images). The summary's URI."""
    from tlfs.pipeline.fit import publish_files

    heads = layout.heads_uri(set_uri)
    with tempfile.TemporaryDirectory(prefix=f"tlfs-{name}-") as tmp:
        files = [Path(tmp) / f"{name}.parquet"]
        table.to_parquet(files[0], index=False)
        if sheet:
            files.append(Path(tmp) / f"{name}.png")
            files[-1].write_bytes(sheet)
        files.append(Path(tmp) / f"{name}.json")
        files[-1].write_text(json.dumps(summary, indent=2))
        publish_files(files, heads)
    if not sheet:
        fs, path = fs_path(f"{heads}/{name}.png")
        if fs.exists(path):
            fs.rm(path)
    return f"{heads}/{name}.json"


def kept_check(heads_files: dict[str, str], name: str) -> KeptCheck | None:
    """The check kept as ``name``, from the files at the top of a set's ``_heads/`` (file name:
    URI); None where none was kept."""
    if f"{name}.json" not in heads_files or f"{name}.parquet" not in heads_files:
        return None
    return KeptCheck(read_json(heads_files[f"{name}.json"]), heads_files[f"{name}.parquet"], heads_files.get(f"{name}.png"))


def kept_summaries(set_uri: str) -> dict[str, dict]:
    """The summary of each check kept beside the set's heads, by name (``tlfs describe``)."""
    heads = layout.heads_uri(set_uri)
    kept = {name: read_json_if_exists(f"{heads}/{name}.json") for name in CHECKS}
    return {name: summary for name, summary in kept.items() if summary is not None}


def check_line(name: str, summary: dict) -> str:
    """A kept check in a line: what it found, and on which version."""
    if name == NEAR_COPIES:
        found = (f"{summary['near_copies']:,} of {summary['images']:,} {summary['counted']} ({summary['share']:.2%}) at "
                 f"{summary['threshold']:g} on {summary['layer']}")
    else:
        found = (f"{summary['issues']:,} of {summary['images']:,} {summary['split']} labels look wrong "
                 f"({summary['share']:.2%}) to {summary['head']} on {'+'.join(summary['layers'])}")
    return f"{found}, on version {summary['version']}"
