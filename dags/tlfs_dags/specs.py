"""Declarative dataset specs: ``dags/datasets/<name>.yaml`` -> one DAG pair per file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tlfs.models.names import DEFAULT_BACKBONE
from tlfs.pipeline.config import DEFAULT_SOURCE_DATASET

SPEC_DIR = Path(__file__).resolve().parents[1] / "datasets"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str = ""
    sources: list[str] = field(default_factory=list)
    backbone: str = DEFAULT_BACKBONE
    layers: list[str] | None = None
    splits: list[str] | None = None
    limit: int | None = None
    views: list[str] = field(default_factory=list)  # beside the original: e.g. [flip]
    schedule: str | None = None
    path: str = ""


def load_spec(path: Path) -> DatasetSpec:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not _NAME.match(str(data.get("name", ""))):
        raise ValueError(f"{path}: a spec needs a 'name' of lowercase letters, digits and '_'")
    known = set(DatasetSpec.__dataclass_fields__) - {"path"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if not data.get("sources") and data["name"] != DEFAULT_SOURCE_DATASET:
        raise ValueError(f"{path}: 'sources' is required (only {DEFAULT_SOURCE_DATASET} has a default source)")
    return DatasetSpec(**{**data, "sources": list(data.get("sources") or []), "path": str(path)})


def load_specs(folder: Path = SPEC_DIR) -> list[DatasetSpec]:
    return [load_spec(p) for p in sorted(folder.glob("*.yaml"))]
