"""An extraction as typed values: what was asked (:class:`ExtractionRequest`), and the
plan that fixes it (:class:`Plan`: the backbone version, the runtime, the dataset's
index, parsed once, and its :class:`Shard` s). ``plan.json`` in the set's staging holds
:meth:`Plan.to_json`; every task of a run reads it back with :meth:`Plan.from_json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tlfs.models.artifact import Artifact
from tlfs.models.session import Runtime, resolve_runtime
from tlfs.pipeline.config import Settings
from tlfs.pipeline.dataset_index import DatasetIndex, Entry


@dataclass(frozen=True)
class ExtractionRequest:
    """What to extract, as a user says it (CLI flags, DAG Params, Python)."""

    dataset: str
    sources: tuple[str, ...]
    backbone: str  # a registry name or an exported version under ``model_store``
    store: str  # feature store root
    model_store: str  # exported ONNX artifacts root
    layers: tuple[str, ...] | None = None  # None: every tap
    splits: tuple[str, ...] | None = None  # None: every split
    limit: int | None = None  # class-balanced sample per split
    shard_size: int = Settings.shard_size
    runtime: Runtime = field(default_factory=resolve_runtime)
    weights: str | None = None
    random_weights: bool = False
    cache_dir: str | None = None


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
    index: DatasetIndex

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

    @cached_property
    def _entries_by_split(self) -> dict[str, list[Entry]]:
        """Each split's entries in index order, gathered once (not once per shard)."""
        by_split: dict[str, list[Entry]] = {split: [] for split in self.splits}
        for e in self.index.entries:
            by_split.setdefault(e.split, []).append(e)
        return by_split

    def shard_entries(self, number: int) -> list[Entry]:
        shard = self.shards[number]
        return self._entries_by_split[shard.split][shard.start : shard.stop]

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
            "splits": list(self.splits),
            "limit": self.limit,
            "batch_size": self.runtime.batch_size,
            "runtime": self.runtime.to_json(),
            "shard_size": self.shard_size,
            "cache_dir": self.cache_dir,
            "shards": [s.to_json() for s in self.shards],
            "index": self.index.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        return cls(
            plan_id=data["plan_id"],
            dataset=data["dataset"],
            set_uri=data["set_uri"],
            artifact=Artifact(data["artifact_uri"], data["model_card"]),
            layers=tuple(data["layers"]),
            splits=tuple(data["splits"]),
            limit=data["limit"],
            runtime=Runtime(**{k: v for k, v in data["runtime"].items() if k != "provider"}),
            shard_size=data["shard_size"],
            cache_dir=data.get("cache_dir"),
            shards=tuple(Shard.from_json(s) for s in data["shards"]),
            index=DatasetIndex.from_json(data["index"]),
        )
