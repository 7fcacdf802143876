"""A table a command writes for its user (predictions, near-copies): a pandas frame as a
``.csv``, ``.parquet`` or ``.jsonl`` file, local or at any fsspec URI."""

from __future__ import annotations

import fsspec

from tlfs.pipeline.errors import PipelineError

WRITERS = {"csv": lambda frame, f: frame.to_csv(f, index=False),
           "parquet": lambda frame, f: frame.to_parquet(f, index=False),
           "jsonl": lambda frame, f: frame.to_json(f, orient="records", lines=True)}


def write_table(frame, uri: str) -> None:
    """``frame`` to ``uri``, in the format its suffix names."""
    suffix = uri.rsplit(".", 1)[-1].lower()
    if suffix not in WRITERS:
        raise PipelineError(f"{uri}: write the table to a .csv, .parquet or .jsonl file")
    with fsspec.open(uri, "wb" if suffix == "parquet" else "w") as f:
        WRITERS[suffix](frame, f)
