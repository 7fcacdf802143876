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


def graph_of(feature_set, model_store: str | None = None):
    """``(artifact, precision)``: :func:`model_of`'s artifact, its card naming the very graph
    file that computed ``feature_set`` at its precision. An int8 graph is built by each model
    store for itself, named by its digest: where the store's card names another one since (built
    again), the set's own file is taken where it is still there; else an error, for features
    computed by another graph would not be the stored ones'."""
    import dataclasses

    from tlfs.features.storage import exists
    from tlfs.pipeline.errors import PipelineError

    artifact = model_of(feature_set, model_store)
    precision = feature_set.lineage["runtime"]["precision"]
    recorded = feature_set.lineage.get("onnx_file_sha256")
    variants = artifact.card.get("variants", {})
    here = artifact.graph_sha256(precision) if precision == "fp32" or precision in variants else None
    if recorded is None or here == recorded:
        return artifact, precision
    from tlfs.models.variants import INT8_PREFIX

    own = f"{INT8_PREFIX}.{recorded[:16]}.onnx"
    if precision == "int8" and exists(f"{artifact.uri}/{own}"):
        card = {**artifact.card, "variants": {**variants, "int8": {**variants.get("int8", {}), "file": own,
                                                                     "sha256": recorded}}}
        return dataclasses.replace(artifact, card=card), precision
    holds = f"its {precision} graph is {here[:16]}..." if here else f"it has no {precision} graph"
    raise PipelineError(f"{feature_set.uri} was computed by the {precision} graph of sha256 {recorded[:16]}..., which "
                        f"{artifact.uri} no longer holds ({holds}): new images' features would not be the stored "
                        f"ones'; extract the set again (tlfs extract --precision {precision})")
