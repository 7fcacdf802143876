"""An extraction as typed values: what was asked (:class:`ExtractionRequest`), and the
plan that fixes it (:class:`Plan`: the backbone version, the runtime, the dataset's
sources and classes, and its :class:`Shard` s).

In the set's staging, ``plan.json`` holds :meth:`Plan.to_json`, which does not list the
images: each shard's entries are saved apart, a JSON line per shard in one file
(``entries.jsonl``, :meth:`Plan.entries_json`) whose byte ranges the plan records, so
that a shard task reads the plan and its own line, and its start-up does not grow with
the dataset. Every task of a run reads the plan back
with :meth:`Plan.from_json`."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Callable

from tlfs.features.codecs import CODECS
from tlfs.features.versions import ManifestRead
from tlfs.models.artifact import Artifact
from tlfs.models.runtime import Runtime, resolve_runtime
from tlfs.pipeline.config import Settings
from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo, label_numbers
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import FULL_DEPTH, check_bit_depth
from tlfs.pipeline.records import Changes, ShardRecord

# how an incremental plan's shard comes from its base version (pipeline/incremental.py)
REUSE, DERIVE = "reuse", "derive"


@dataclass(frozen=True)
class ExtractionRequest:
    """What to extract, as a user says it (CLI flags, DAG Params, Python): built with
    keywords from plain values (lists, a view list, no runtime), which it normalises."""

    dataset: str
    sources: tuple[str, ...]
    backbone: str  # a registry name or an exported version under ``model_store``
    store: str  # feature store root
    model_store: str  # exported ONNX artifacts root
    layers: tuple[str, ...] | None = None  # None: every tap
    splits: tuple[str, ...] | None = None  # None: every split
    limit: int | None = None  # class-balanced sample per split
    shard_size: int = Settings.shard_size
    codec: str = Settings.codec  # the shard files' compression (features/codecs.py)
    runtime: Runtime | None = None  # None: the CPU's
    weights: str | None = None
    random_weights: bool = False
    cache_dir: str | None = None
    views: tuple[str, ...] | None = None  # pipeline/views.py: the original (always), and e.g. flip
    incremental: bool = True  # reuse the newest version's unchanged images (pipeline/incremental.py)
    # the bits greyscale 16-bit samples hold (pipeline/image_decode.py); None: the newest version's, else 16
    bit_depth: int | None = None

    def __post_init__(self) -> None:
        """Plain values made the request's own: lists as tuples, the views checked with the
        original first, the CPU's runtime where none is given (models/runtime.py)."""
        from tlfs.pipeline.views import check_views

        if self.codec not in CODECS:
            raise PipelineError(f"unknown codec {self.codec!r}: one of {', '.join(CODECS)}")
        if self.bit_depth is not None:
            check_bit_depth(self.bit_depth)
        normal = {"sources": tuple(self.sources), "layers": tuple(self.layers) if self.layers else None,
                  "splits": tuple(self.splits) if self.splits else None,
                  "runtime": self.runtime or resolve_runtime(), "views": check_views(self.views)}
        for name, value in normal.items():
            object.__setattr__(self, name, value)  # frozen: set once, here


@dataclass(frozen=True)
class Shard:
    """Images ``start:stop`` of one split (in the index's order)."""

    number: int
    split: str
    start: int
    stop: int

    @property
    def images(self) -> int:
        return self.stop - self.start

    def to_json(self) -> dict:
        return {"shard": self.number, "split": self.split, "start": self.start, "stop": self.stop}

    @classmethod
    def from_json(cls, data: dict) -> "Shard":
        return cls(data["shard"], data["split"], data["start"], data["stop"])


@dataclass(frozen=True, eq=False)
class Plan:
    plan_id: str
    dataset: str
    set_uri: str
    artifact: Artifact
    layers: tuple[str, ...]
    splits: tuple[str, ...]
    limit: int | None
    runtime: Runtime
    shard_size: int
    cache_dir: str | None
    shards: tuple[Shard, ...]
    sources: tuple[SourceInfo, ...]
    classes: tuple[str, ...]
    index_rejects: tuple[Reject, ...]  # refused while indexing (unsafe paths, links, rows without a label)
    views: tuple[str, ...] = ("original",)
    codec: str = Settings.codec  # how its shard files are compressed (features/codecs.py)
    bit_depth: int = FULL_DEPTH  # the bits its greyscale 16-bit samples hold (pipeline/image_decode.py)
    # incremental runs (pipeline/incremental.py): the version built on, how each shard
    # not extracted comes from it (number -> origin), and what changed against it
    base: dict | None = None
    origins: dict[int, dict] = field(default_factory=dict, repr=False)
    changes: Changes | None = None  # against the version it builds on (pipeline/incremental.py)
    # each shard's entries: all of them in the process that planned, else read on demand
    entries: dict[int, list[Entry]] = field(default_factory=dict, repr=False)
    read_entries: Callable[[int], list] | None = field(default=None, repr=False)
    # the records its commit gathered into one file, read once (pipeline/staging.py)
    gathered: dict = field(default_factory=dict, repr=False)
    # the set's newest manifest as planning read it (in the process that planned): its
    # commit, finding the same bytes under its lock, does not parse them again
    newest: ManifestRead | None = field(default=None, repr=False)
    # the source URIs as given (a glob, options in the fragment): what a later run of the
    # dataset reads where it is given none (pipeline/dataset_sources.py)
    source_uris: tuple[str, ...] = ()

    @property
    def backbone(self) -> str:
        return self.artifact.card["backbone"]

    @property
    def backbone_version(self) -> str:
        return self.artifact.version

    @property
    def input_size(self) -> int:
        return self.artifact.card["preprocessing"]["input_size"]

    @property
    def layer_dims(self) -> dict[str, int]:
        return {layer: self.artifact.card["layers"][layer] for layer in self.layers}

    @property
    def images(self) -> int:
        return sum(s.images for s in self.shards)

    def label_of(self, name: str) -> int:
        return self._labels[name]

    @functools.cached_property
    def _labels(self) -> dict[str, int]:
        return label_numbers(self.classes)

    def reused_record(self, number: int) -> ShardRecord | None:
        """Shard ``number``'s record if it is the base version's shard reused as it is (its
        files untouched: the plan holds its record, and nothing is saved for it); else None."""
        origin = self.origins.get(number)
        return ShardRecord.reused_from(origin["record"], number) if origin and origin["kind"] == REUSE else None

    def shard_entries(self, number: int) -> list[Entry]:
        if number not in self.entries:
            if self.read_entries is None:
                raise KeyError(f"plan {self.plan_id} has no entries for shard {number}")
            self.entries[number] = [Entry(*row) for row in self.read_entries(number)]
        return self.entries[number]

    def entries_json(self, number: int) -> list[list]:
        return [e.to_row() for e in self.shard_entries(number)]

    def to_json(self) -> dict:
        return {
            "plan_id": self.plan_id,
            "dataset": self.dataset,
            "backbone": self.backbone,
            "backbone_version": self.backbone_version,
            "artifact_uri": self.artifact.uri,
            "model_card": self.artifact.card,
            "set_uri": self.set_uri,
            "layers": list(self.layers),
            "views": list(self.views),
            "splits": list(self.splits),
            "limit": self.limit,
            "batch_size": self.runtime.batch_size,
            "runtime": self.runtime.to_json(),
            "shard_size": self.shard_size,
            "codec": self.codec,
            "bit_depth": self.bit_depth,
            "cache_dir": self.cache_dir,
            "shards": [s.to_json() for s in self.shards],
            "sources": [asdict(s) for s in self.sources],
            "source_uris": list(self.source_uris),
            "classes": list(self.classes),
            "index_rejects": [asdict(r) for r in self.index_rejects],
            "base": self.base,
            "origins": {str(number): origin for number, origin in self.origins.items()},
            "changes": self.changes.to_json() if self.changes else {},
        }

    @classmethod
    def from_json(cls, data: dict, read_entries: Callable[[int], list] | None = None) -> "Plan":
        """``read_entries(number)``: a shard's saved entry rows (see the module's note)."""
        return cls(
            plan_id=data["plan_id"],
            dataset=data["dataset"],
            set_uri=data["set_uri"],
            artifact=Artifact(data["artifact_uri"], data["model_card"]),
            layers=tuple(data["layers"]),
            views=tuple(data.get("views", ["original"])),
            splits=tuple(data["splits"]),
            limit=data["limit"],
            runtime=Runtime(**{k: v for k, v in data["runtime"].items() if k != "provider"}),
            shard_size=data["shard_size"],
            codec=data.get("codec", Settings.codec),  # plans saved before there was a choice
            bit_depth=data.get("bit_depth", FULL_DEPTH),
            cache_dir=data.get("cache_dir"),
            shards=tuple(Shard.from_json(s) for s in data["shards"]),
            sources=tuple(SourceInfo(**s) for s in data["sources"]),
            source_uris=tuple(data.get("source_uris", ())),  # plans saved before they were kept
            classes=tuple(data["classes"]),
            index_rejects=tuple(Reject(**r) for r in data["index_rejects"]),
            base=data.get("base"),
            origins={int(number): origin for number, origin in data.get("origins", {}).items()},
            changes=Changes.from_json(data["changes"]) if data.get("changes") else None,
            read_entries=read_entries,
        )
