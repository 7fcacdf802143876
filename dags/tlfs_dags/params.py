"""DAG Params made from the typed settings (pipeline/config.py): a Param's type, bounds,
choices and description come from the same field as the CLI flag's, so a default or a
bound is stated once."""

from __future__ import annotations

from dataclasses import Field, fields

from airflow.sdk import Param

from tlfs.pipeline.config import SETTING_FIELDS, FinetuneConfig, setting_help

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
# FinetuneConfig fields whose DAG Param has another name (batch_size is the extraction's there)
FINETUNE_PARAM_NAMES = {"batch_size": "train_batch_size"}


def field_schema(f: Field) -> dict:
    """The JSON schema of a Settings or FinetuneConfig field's value."""
    meta = f.metadata
    schema: dict = {"type": _JSON_TYPES[type(f.default)]}
    if meta["choices"]:
        schema["enum"] = list(meta["choices"])
    if meta["minimum"] is not None:
        schema["minimum"] = meta["minimum"]
    if meta["positive"]:
        schema["exclusiveMinimum"] = 0
    if meta["pattern"]:
        schema["pattern"] = meta["pattern"]
    return schema


def setting_param(name: str, default=None, description: str | None = None) -> Param:
    """A Param for the Settings field ``name``; with a None default it may stay null, and
    then the worker's environment or the setting's default applies."""
    schema = field_schema(SETTING_FIELDS[name])
    if default is None:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return Param(default, description=description or setting_help(name), **schema)


def finetune_config_params() -> dict:
    """One Param per FinetuneConfig field, with its default and help."""
    return {FINETUNE_PARAM_NAMES.get(f.name, f.name): Param(f.default, description=f.metadata["help"], **field_schema(f))
            for f in fields(FinetuneConfig)}


def finetune_config_of(params: dict) -> dict:
    """A run's FinetuneConfig settings, from its Params."""
    return {f.name: params[FINETUNE_PARAM_NAMES.get(f.name, f.name)] for f in fields(FinetuneConfig)}
