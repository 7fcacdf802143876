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


def model_of(feature_set):
    """The exported model that made ``feature_set``'s rows (its lineage's ``model_uri``), as
    an :class:`~tlfs.models.artifact.Artifact`; an error saying to export it again where it
    is gone."""
    from tlfs.models.artifact import Artifact, read_card
    from tlfs.pipeline.errors import PipelineError

    card = read_card(feature_set.model_uri)
    if card is None:
        raise PipelineError(f"the model of {feature_set.uri} ({feature_set.model_uri}) is gone; export "
                            f"{feature_set.backbone} again")
    return Artifact(feature_set.model_uri, card)
