"""An exported backbone version on disk or in an object store: where it is and what
its model card says. Importable without torch, so that extraction workers (which only
need onnxruntime) stay light."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import fsspec

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


def read_card(uri: str) -> dict | None:
    fs, path = fsspec.core.url_to_fs(f"{uri}/{CARD_NAME}")
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def put_atomically(local_path: Path, uri: str) -> None:
    """Copy a local file to ``uri`` so that a crash never leaves a partial file under
    the final name: locally copy to a hidden temporary name, then rename; an object
    store's PUT is already all-or-nothing."""
    fs, path = fsspec.core.url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols:
        fs.put_file(str(local_path), path)
        return
    parent, name = path.rsplit("/", 1)
    temporary = f"{parent}/.{name}.tmp"
    fs.put_file(str(local_path), temporary)
    fs.mv(temporary, path)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
