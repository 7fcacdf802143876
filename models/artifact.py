"""An exported backbone version on disk or in an object store: where it is and what
its model card says. Importable without torch, so that extraction workers (which only
need onnxruntime) stay light."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tlfs.features.storage import read_json_if_exists

CARD_NAME = "model_card.json"
ONNX_NAME = "model.onnx"


@dataclass(frozen=True)
class Artifact:
    """An exported backbone version: where it is and what its card says."""

    uri: str  # folder URI
    card: dict

    @property
    def version(self) -> str:
        return self.card["version"]

    @property
    def onnx_uri(self) -> str:
        return f"{self.uri}/{ONNX_NAME}"

    def graph_sha256(self, precision: str) -> str:
        """The sha256 of the graph file that runs at ``precision``: the exported graph's for
        fp32, its variant's (built from it) for fp16 and int8."""
        if precision == "fp32":
            return self.card["onnx_sha256"]
        return self.card["variants"][precision]["sha256"]


def local_cache(cache_dir: str | None = None) -> Path:
    """The local folder where graphs from an object store, and fixed-shape graphs, are kept
    (``cache_dir``, else a folder in the system's temporary directory)."""
    folder = Path(cache_dir or os.path.join(tempfile.gettempdir(), "tlfs-models"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_card(uri: str) -> dict | None:
    """The model card of the version at ``uri``, or None where it was never (fully) exported."""
    return read_json_if_exists(f"{uri}/{CARD_NAME}")
