"""What produced a feature set: code version and environment, for the manifest; and the
exported model its lineage names, for what reads the set again (advise, predict)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


@functools.cache
def code_version() -> dict:
    """The package's version and git commit of the code this process runs. Taken once per
    process (the code imported is the code that runs, whatever is installed meanwhile):
    reading the package's metadata and asking git cost a commit a few milliseconds."""
    try:
        package = metadata.version("tlfs")
    except metadata.PackageNotFoundError:
        package = "unknown"
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package, "git_commit": commit}


def model_of(feature_set, model_store: str | None = None):
    """The exported model that made ``feature_set``'s rows, as an
    :class:`~tlfs.models.artifact.Artifact`: where its lineage's ``model_uri`` says, else its
    backbone version in ``model_store`` (default: the settings', ``TLFS_MODELS``) where the ONNX
    there is the same (a relative ``model_uri`` read from another folder, a store moved with
    its models); an error saying where it looked and what to do where neither holds it."""
    import os

    from tlfs.features.storage import is_relative_path
    from tlfs.models.artifact import Artifact, read_card
    from tlfs.pipeline.config import load_settings
    from tlfs.pipeline.errors import PipelineError

    recorded = feature_set.model_uri
    card = read_card(recorded)
    if card is not None:
        return Artifact(recorded, card)
    store = model_store or load_settings().model_store
    here = f"{store.rstrip('/')}/{feature_set.backbone_version}"
    card = read_card(here) if here != recorded else None
    if card is not None and card.get("onnx_sha256") == feature_set.lineage["onnx_sha256"]:
        return Artifact(here, card)
    raise PipelineError(f"the model of {feature_set.uri} is not where its lineage says, {recorded}"
                        + (f" (relative to {os.getcwd()})" if is_relative_path(recorded) else "")
                        + (f", nor in {store} (TLFS_MODELS)" if here != recorded else "")
                        + f": point TLFS_MODELS at the folder of the exported models, or export {feature_set.backbone} "
                        "again")
