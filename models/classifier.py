"""The pretrained ImageNet classifier of a backbone version, saved beside its ONNX graph
at export (``imagenet_classifier.npz``: ``weight [1000, d]``, ``bias [1000]``, applied to
the pooled features of the card's ``imagenet_classifier.layer``). ``tlfs advise`` turns a
committed set's stored features into ImageNet predictions with it: no torch, no second
extraction. A fine-tuned version has its dataset's head instead, and no such file."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from tlfs.features.storage import atomic_put_file, fs_path, sha256_uri
from tlfs.models.artifact import Artifact
from tlfs.models.errors import ModelError

CLASSIFIER_NAME = "imagenet_classifier.npz"


def save_classifier(loaded, uri: str) -> dict:
    """Write the classifier of ``loaded`` (a LoadedBackbone: torch) beside the graph at
    ``uri``; returns the card's ``imagenet_classifier`` entry."""
    from tlfs.models.backbones import imagenet_classifier

    weight, bias = imagenet_classifier(loaded)
    with tempfile.TemporaryDirectory(prefix="tlfs-classifier-") as tmp:
        path = Path(tmp) / CLASSIFIER_NAME
        np.savez(path, weight=weight.float().numpy(), bias=bias.float().numpy())
        atomic_put_file(path, f"{uri}/{CLASSIFIER_NAME}")
        return {"file": CLASSIFIER_NAME, "layer": loaded.spec.classifier_input, "classes": int(weight.shape[0]),
                "sha256": sha256_uri(path)}


def load_classifier(artifact: Artifact) -> tuple[np.ndarray, np.ndarray, str]:
    """``(weight, bias, layer)`` of the version's ImageNet classifier, checked against its card."""
    info = artifact.card.get("imagenet_classifier")
    if not info:
        why = (f"it is fine-tuned from {artifact.card['parent']['version']} and has its dataset's head"
               if artifact.card.get("parent") else "it was exported without one; export it again")
        raise ModelError(f"backbone version {artifact.version} has no ImageNet classifier: {why}")
    uri = f"{artifact.uri}/{info['file']}"
    fs, path = fs_path(uri)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelError(f"{uri} is missing; export {artifact.card['backbone']} again") from None
    from tlfs.features.storage import sha256_bytes

    if sha256_bytes(data) != info["sha256"]:
        raise ModelError(f"{uri} does not match its model card's sha256; export {artifact.card['backbone']} again")
    arrays = np.load(io.BytesIO(data))
    return arrays["weight"], arrays["bias"], info["layer"]
