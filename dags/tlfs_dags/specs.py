"""Declarative dataset specs: ``dags/datasets/<name>.yaml`` -> one DAG trio per file.

Each file is loaded and checked on its own (``load_spec``): a bad file is a ``SpecError``
naming the file, the line, the key and what is allowed, and never stops another
dataset's DAGs from loading (``load_specs`` returns the good specs and the errors apart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from tlfs.models.names import BACKBONES, DEFAULT_BACKBONE, EXTRA_VIEWS, is_backbone
from tlfs.pipeline.config import DEFAULT_SOURCE_DATASET
from tlfs.pipeline.image_decode import BIT_DEPTHS

SPEC_DIR = Path(__file__).resolve().parents[1] / "datasets"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# Airflow's schedule presets (airflow.timetables); anything else must be a 5-field cron line.
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


class SpecError(ValueError):
    """A dataset spec file that cannot become DAGs; the message names the file and line."""


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
    balanced: bool = False  # fit_heads_<name>'s heads predict as if every class were equally common
    # images waiting for labels (files, folders, globs): fit_heads_<name> chooses which to label next
    unlabelled: list[str] = field(default_factory=list)
    label_next: int = 100  # how many it chooses (tlfs label-next's default)
    # fit_heads_<name> checks its split for near-copies and its labels after each fit: off for a set too large to search
    checks: bool = True
    # the bits its greyscale 16-bit images hold (12: a microscope's 0-4095): the default of its runs' bit_depth
    bit_depth: int | None = None
    path: str = ""


@dataclass(frozen=True)
class SpecLoad:
    """Every spec of a folder: the good ones, and one error per bad file."""

    specs: list[DatasetSpec]
    errors: list[SpecError]


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _text_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_text(v) for v in value)


def _valid_schedule(value: Any) -> bool:
    if value is None or value in SCHEDULE_PRESETS:
        return True
    if not isinstance(value, str):
        return False
    from croniter import croniter  # Airflow's own cron parser (a dependency of apache-airflow)

    return len(value.split()) == 5 and croniter.is_valid(value)


# key -> (is the value allowed?, what is allowed)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(_NAME.match(v)),
             "lowercase letters, digits and '_', starting with a letter or digit"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "sources": (lambda v: v is None or _text_list(v), "a list of source URIs"),
    "backbone": (lambda v: isinstance(v, str) and is_backbone(v), "one of " + ", ".join(BACKBONES) + ", or timm/<model>"),
    "layers": (lambda v: v is None or (_text_list(v) and bool(v)), "null (all) or a list of tap layer names"),
    "splits": (lambda v: v is None or (_text_list(v) and bool(v)), "null (all) or a list of split names"),
    "limit": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
              "null or an integer > 0"),
    "views": (lambda v: v is None or (isinstance(v, list) and all(x in EXTRA_VIEWS for x in v)),
              "a list of views from: " + ", ".join(EXTRA_VIEWS)),
    "schedule": (_valid_schedule, "null, a preset (" + ", ".join(SCHEDULE_PRESETS) + ") or a 5-field cron line"),
    "balanced": (lambda v: isinstance(v, bool), "true or false"),
    "unlabelled": (_text_list, "a list of image files, folders or globs"),
    "label_next": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "an integer > 0"),
    "checks": (lambda v: isinstance(v, bool), "true or false"),
    "bit_depth": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v in BIT_DEPTHS),
                  f"null or an integer from {BIT_DEPTHS.start} to {BIT_DEPTHS.stop - 1}"),
}
KNOWN_KEYS = [f.name for f in fields(DatasetSpec) if f.name != "path"]


def _key_lines(text: str) -> dict[str, int]:
    """The line (1-based) of each top-level key, for messages."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value}


def load_spec(path: Path) -> DatasetSpec:
    """One spec file, checked; a ``SpecError`` naming ``path:line`` and the key otherwise."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping of keys ({', '.join(KNOWN_KEYS)}), got {type(data).__name__}")

    def fail(key: str, reason: str):
        line = lines.get(key)
        raise SpecError(f"{path}{f':{line}' if line else ''}: key {key!r}: {reason}")

    for key in data:
        if key not in RULES:
            fail(str(key), f"unknown key; known: {', '.join(KNOWN_KEYS)}")
    if "name" not in data:
        raise SpecError(f"{path}: key 'name' is required ({RULES['name'][1]})")
    for key, value in data.items():
        allowed, what = RULES[key]
        if not allowed(value):
            fail(key, f"expected {what}, got {value!r}")
    if not data.get("sources") and data["name"] != DEFAULT_SOURCE_DATASET:
        needed = f"a list of source URIs (only {DEFAULT_SOURCE_DATASET} has a default source)"
        if "sources" not in data:
            raise SpecError(f"{path}: key 'sources' is required: {needed}")
        fail("sources", f"expected {needed}, got {data['sources']!r}")
    values = {k: v for k, v in data.items() if v is not None}  # a key given as null takes its default
    return DatasetSpec(**{**values, "sources": list(data.get("sources") or []), "views": list(data.get("views") or []),
                          "path": str(path)})


def load_specs(folder: Path = SPEC_DIR) -> SpecLoad:
    """Every ``*.yaml`` in ``folder``, each on its own: one bad file costs only its own DAGs."""
    specs, errors = [], []
    for path in sorted(folder.glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            errors.append(exc)
    seen: dict[str, str] = {}
    for spec in list(specs):
        if spec.name in seen:
            errors.append(SpecError(f"{spec.path}: key 'name': {spec.name!r} is already the name in {seen[spec.name]}"))
            specs.remove(spec)
        else:
            seen[spec.name] = spec.path
    return SpecLoad(specs, errors)
