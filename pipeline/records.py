"""What passes between extraction's stages and tasks: what a plan changes against the
version it builds on (:class:`Changes`); a shard's result record (its
files, each with the size and sha256 its writer took from the bytes it wrote; its
counts; its rejects). A record is saved in the plan's staging and handed from the DAG's
shard tasks to its commit as JSON (:meth:`ShardRecord.to_json`); in the process it is
this typed value. A reject is :class:`~tlfs.pipeline.dataset_index.Reject` everywhere."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, replace

from tlfs.features.layout import ORIGINAL
from tlfs.pipeline.dataset_index import Reject


@dataclass(frozen=True)
class Changes:
    """What a plan changes against the version it builds on (``base_version`` None: a
    first or full run, nothing reused)."""

    base_version: int | None
    added: int
    changed: int
    removed: int | None
    reused: int
    shards_reused: int | None = None  # incremental plans only
    shards_derived: int | None = None
    extracted: int | None = None  # images this plan runs through the backbone

    @classmethod
    def fresh(cls, images: int) -> "Changes":
        return cls(None, images, 0, None, 0)

    def with_extracted(self, images: int) -> "Changes":
        return dataclasses.replace(self, extracted=images)

    def describe(self) -> str:
        """One line: what a version changed against its base."""
        if self.base_version is None:
            return f"{self.extracted if self.extracted is not None else self.added} images extracted (nothing reused)"
        return (f"against version {self.base_version}: {self.added} new, {self.changed} changed, "
                f"{self.removed} removed, {self.reused} reused; {self.extracted} extracted")

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k in ("base_version", "removed")}

    @classmethod
    def from_json(cls, data: dict) -> "Changes":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True)
class ShardFile:
    """One Parquet file of a shard (one layer of one view), as the manifest lists it."""

    path: str  # inside the set
    rows: int
    bytes: int
    sha256: str
    layer: str | None = None  # named only for a view other than the original
    view: str | None = None

    def __post_init__(self) -> None:
        if self.view in (None, ORIGINAL):  # the original's files are named by their record key alone
            object.__setattr__(self, "layer", None)
            object.__setattr__(self, "view", None)

    def to_json(self) -> dict:
        named = {"layer": self.layer, "view": self.view} if self.view is not None else {}
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256, **named}

    def manifest_row(self, key: str, split: str, shard: int) -> dict:
        """The manifest's row for this file of shard ``shard`` (``key``: its record's name
        for it), in one dict: a commit makes one per file of the set."""
        if self.view is None:
            return {"layer": key, "split": split, "shard": shard, "path": self.path, "rows": self.rows,
                    "bytes": self.bytes, "sha256": self.sha256}
        return {"layer": self.layer, "split": split, "shard": shard, "path": self.path, "rows": self.rows,
                "bytes": self.bytes, "sha256": self.sha256, "view": self.view}

    @classmethod
    def from_json(cls, data: dict) -> "ShardFile":
        return cls(data["path"], int(data["rows"]), int(data["bytes"]), data["sha256"], data.get("layer"), data.get("view"))


def file_key(layer: str, view: str) -> str:
    """A record's name for the file of ``layer`` in ``view``."""
    return layer if view == ORIGINAL else f"{view}/{layer}"


@dataclass(frozen=True)
class ShardRecord:
    shard: int
    split: str
    read: int
    written: int
    rejected: int
    rejects: tuple[Reject, ...]
    files: dict[str, ShardFile] = field(default_factory=dict)
    seconds: float = 0.0
    # the writer threads' seconds on its files once its batches were in (float16, gathering, Parquet encoding,
    # the atomic writes), summed over the files
    write_seconds: float = 0.0
    infer_seconds: float = 0.0  # batching and the session's runs (on its own thread)
    skipped: bool = False  # found done (by an earlier or a concurrent run of the plan)
    reused: bool = False  # the base version's, its files untouched
    derived: bool = False  # copied from the base version's files without removed or changed rows
    # the manifest's rows for its files, made with the record (in the shard's task, or the
    # plan for a reused shard): the commit, under the set's lock, only gathers them
    manifest_rows: tuple[dict, ...] = field(init=False, repr=False, compare=False)

    @property
    def reconciles(self) -> bool:
        return self.read == self.written + self.rejected

    def with_(self, **changes) -> "ShardRecord":
        return replace(self, **changes)

    @classmethod
    def reused_from(cls, record: dict, number: int) -> "ShardRecord":
        """A base version's shard record (JSON) as shard ``number`` of a plan that reuses it
        as it is, its files untouched (a plan holds it: nothing is saved for it)."""
        return cls.from_json(record).with_(shard=number, reused=True, seconds=0.0)

    def __post_init__(self) -> None:
        rows = tuple(f.manifest_row(key, self.split, self.shard) for key, f in self.files.items())
        object.__setattr__(self, "manifest_rows", rows)

    def to_json(self) -> dict:
        flags = {name: True for name in ("skipped", "reused", "derived") if getattr(self, name)}
        return {"shard": self.shard, "split": self.split, "read": self.read, "written": self.written,
                "rejected": self.rejected, "rejects": [asdict(r) for r in self.rejects],
                "files": {key: f.to_json() for key, f in self.files.items()}, "seconds": self.seconds,
                "write_seconds": self.write_seconds, "infer_seconds": self.infer_seconds, **flags}

    @classmethod
    def from_json(cls, data: dict) -> "ShardRecord":
        return cls(int(data["shard"]), data["split"], int(data["read"]), int(data["written"]), int(data["rejected"]),
                   tuple(Reject(**r) for r in data["rejects"]),
                   {key: ShardFile.from_json(f) for key, f in data["files"].items()},
                   float(data.get("seconds", 0.0)), float(data.get("write_seconds", 0.0)),
                   float(data.get("infer_seconds", 0.0)), bool(data.get("skipped")), bool(data.get("reused")),
                   bool(data.get("derived")))
