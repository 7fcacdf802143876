"""A table a command writes for its user (predictions, near-copies, a labelling queue): a
pandas frame as a ``.csv``, ``.parquet`` or ``.jsonl`` file, local or at any fsspec URI; and one
read back (a queue that ``label-next`` is told to leave out)."""

from __future__ import annotations

import fsspec

from tlfs.pipeline.errors import PipelineError

WRITERS = {"csv": lambda frame, f: frame.to_csv(f, index=False),
           "parquet": lambda frame, f: frame.to_parquet(f, index=False),
           "jsonl": lambda frame, f: frame.to_json(f, orient="records", lines=True)}


def table_suffix(uri: str) -> str:
    """The format ``uri``'s suffix names (``csv``, ``parquet``, ``jsonl``): an error for any other,
    which a command gives before its work, not after."""
    suffix = uri.rsplit(".", 1)[-1].lower()
    if suffix not in WRITERS:
        raise PipelineError(f"{uri}: write the table to a .csv, .parquet or .jsonl file")
    return suffix


def write_table(frame, uri: str) -> None:
    """``frame`` to ``uri``, in the format its suffix names."""
    suffix = table_suffix(uri)
    with fsspec.open(uri, "wb" if suffix == "parquet" else "w") as f:
        WRITERS[suffix](frame, f)


READERS = {"csv": "read_csv", "parquet": "read_parquet", "jsonl": "read_json"}


def read_table(uri: str, column: str) -> list:
    """The values of ``column`` of the table at ``uri`` (a ``.csv``, ``.parquet`` or ``.jsonl``
    file as :func:`write_table` writes them), in order."""
    import pandas as pd

    suffix = uri.rsplit(".", 1)[-1].lower()
    if suffix not in READERS:
        raise PipelineError(f"{uri}: not a table (a .csv, .parquet or .jsonl file)")
    options = {"lines": True} if suffix == "jsonl" else {"use_threads": False} if suffix == "parquet" else {}  # schema.read_parquet
    try:
        with fsspec.open(uri, "rb") as f:
            frame = getattr(pd, READERS[suffix])(f, **options)
    except FileNotFoundError:
        raise PipelineError(f"{uri}: no such file") from None
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{uri}: cannot be read as a .{suffix} table ({exc})") from None
    if column not in frame.columns:
        raise PipelineError(f"{uri}: no {column!r} column (its columns: {', '.join(map(str, frame.columns))})")
    return frame[column].tolist()
