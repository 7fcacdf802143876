"""The analysts' side: list, describe and load committed feature sets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features import layout
from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.schema import features_matrix
from tlfs.features.storage import fs_path, read_json

DEFAULT_STORE_ENV = "TLFS_STORE"
DEFAULT_STORE = "tlfs-data/store"


def resolve_store(store: str | None) -> str:
    return store or os.environ.get(DEFAULT_STORE_ENV) or DEFAULT_STORE


def _manifests(store: str) -> list[tuple[str, dict]]:
    fs, root = fs_path(store)
    found = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/*/*/{layout.MANIFEST}")):
        set_root = path.rsplit("/", 1)[0]
        uri = store.rstrip("/") + set_root[len(root.rstrip("/")) :]
        found.append((uri, read_json(f"{uri}/{layout.MANIFEST}")))
    return found


def list_sets(store: str | None = None) -> pd.DataFrame:
    """One row per committed feature set."""
    store = resolve_store(store)
    rows = [
        {
            "dataset": m["dataset"],
            "backbone": m["backbone"],
            "backbone_version": m["backbone_version"],
            "layers": list(m["layers"]),
            "splits": list(m["splits"]),
            "rows": m["rows"],
            "rejected": sum(c["rejected"] for c in m["counts"].values()),
            "committed_at": m["committed_at"],
            "uri": uri,
        }
        for uri, m in _manifests(store)
    ]
    columns = ["dataset", "backbone", "backbone_version", "layers", "splits", "rows", "rejected", "committed_at", "uri"]
    return pd.DataFrame(rows, columns=columns)


def find_set(dataset: str, backbone: str, store: str | None = None) -> tuple[str, dict]:
    """The committed set for ``dataset`` and a backbone name (newest version) or an
    exact backbone version."""
    store = resolve_store(store)
    matches = [
        (uri, m) for uri, m in _manifests(store)
        if m["dataset"] == dataset and backbone in (m["backbone"], m["backbone_version"])
    ]
    if not matches:
        raise NotCommitted(f"no committed feature set for dataset {dataset!r} and backbone {backbone!r} in {store}")
    return max(matches, key=lambda um: um[1]["committed_at"])


def describe(dataset: str, backbone: str, store: str | None = None) -> dict:
    """The manifest of the set, with its location."""
    uri, manifest = find_set(dataset, backbone, store)
    return {"uri": uri, **manifest}


def _read_table(dataset: str, backbone: str, layer: str, split: str, store: str | None) -> pa.Table:
    """Reads the files one manifest lists. If a concurrent commit replaced the set and
    removed them meanwhile, reads the new manifest once more: never a mix of versions."""
    for attempt in range(2):
        uri, manifest = find_set(dataset, backbone, store)
        try:
            return _read_committed(uri, manifest, layer, split)
        except FileNotFoundError:
            if attempt:
                raise StoreError(f"the feature set at {uri} changed twice while being read; try again") from None
    raise AssertionError("unreachable")


def _read_committed(uri: str, manifest: dict, layer: str, split: str) -> pa.Table:
    if layer not in manifest["layers"]:
        raise StoreError(f"layer {layer!r} is not in {uri}; it has {', '.join(manifest['layers'])}")
    if split not in manifest["splits"]:
        raise StoreError(f"split {split!r} is not in {uri}; it has {', '.join(manifest['splits'])}")
    shards = sorted((s for s in manifest["shards"] if s["layer"] == layer and s["split"] == split), key=lambda s: s["shard"])
    fs, _ = fs_path(uri)
    tables = []
    for s in shards:
        _, path = fs_path(f"{uri}/{s['path']}")
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f))
    if not tables:
        return pa.table({"image_id": pa.array([], pa.string())})
    return pa.concat_tables(tables)


def load(dataset: str, backbone: str, layer: str, split: str, store: str | None = None) -> pd.DataFrame:
    """Rows of one layer and split: image_id, label, label_name, split, features
    (one float16 array per row)."""
    table = _read_table(dataset, backbone, layer, split, store)
    frame = table.to_pandas()
    frame.insert(3, "split", split)
    return frame


def load_matrix(
    dataset: str, backbone: str, layer: str, split: str, store: str | None = None, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X[n, d], y[n], ids[n])`` of one layer and split."""
    table = _read_table(dataset, backbone, layer, split, store)
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype), np.zeros(0, np.int64), np.zeros(0, object)
    X = features_matrix(table.column("features"), dtype)
    y = table.column("label").to_numpy().astype(np.int64)
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)
    return X, y, ids


__all__ = ["list_sets", "describe", "load", "load_matrix", "find_set", "NotCommitted"]
