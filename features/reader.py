"""The analysts' side: list, describe, open and load committed feature sets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tlfs.features.errors import StoreError
from tlfs.features.feature_set import FeatureSet, SetReplaced, committed_sets, find

DEFAULT_STORE_ENV = "TLFS_STORE"
DEFAULT_STORE = "tlfs-data/store"


def resolve_store(store: str | None) -> str:
    return store or os.environ.get(DEFAULT_STORE_ENV) or DEFAULT_STORE


def open_set(dataset: str, backbone: str, version: str | None = None, store: str | None = None) -> FeatureSet:
    """A handle on the committed set of ``dataset`` for ``backbone`` (a name: its newest
    version; or an exact version), or for its exact ``version`` when given: everything
    read through it comes from one commit (see :class:`~tlfs.features.feature_set.FeatureSet`)."""
    found = find(dataset, version or backbone, resolve_store(store))
    if version and backbone not in (found.manifest["backbone"], found.backbone_version):
        raise StoreError(f"{version} is a version of {found.manifest['backbone']}, not of {backbone}")
    return found


def list_sets(store: str | None = None) -> pd.DataFrame:
    """One row per committed feature set."""
    rows = [
        {
            "dataset": s.dataset,
            "backbone": s.manifest["backbone"],
            "backbone_version": s.backbone_version,
            "layers": list(s.layers),
            "splits": s.splits,
            "rows": s.manifest["rows"],
            "rejected": sum(c["rejected"] for c in s.manifest["counts"].values()),
            "committed_at": s.manifest["committed_at"],
            "uri": s.uri,
        }
        for s in committed_sets(resolve_store(store))
    ]
    columns = ["dataset", "backbone", "backbone_version", "layers", "splits", "rows", "rejected", "committed_at", "uri"]
    return pd.DataFrame(rows, columns=columns)


def find_set(dataset: str, backbone: str, store: str | None = None) -> tuple[str, dict]:
    """``(uri, manifest)`` of :func:`open_set`'s set."""
    s = open_set(dataset, backbone, store=store)
    return s.uri, s.manifest


def describe(dataset: str, backbone: str, store: str | None = None) -> dict:
    """The manifest of the set, with its location."""
    s = open_set(dataset, backbone, store=store)
    return {"uri": s.uri, **s.manifest}


def _read_newest(dataset: str, backbone: str, store: str | None, read):
    """``read(handle)`` on the newest commit. If a concurrent commit replaced the set and
    removed its files meanwhile, opens the new commit once more: never a mix of versions."""
    try:
        return read(open_set(dataset, backbone, store=store))
    except SetReplaced:
        try:
            return read(open_set(dataset, backbone, store=store))
        except SetReplaced as second:
            raise StoreError(f"the feature set at {second.set_uri} changed twice while being read; try again") from None


def load(dataset: str, backbone: str, layer: str, split: str, store: str | None = None,
         view: str = "original") -> pd.DataFrame:
    """Rows of one layer and split: image_id, label, label_name, split, features
    (one float16 array per row); of the original image unless ``view`` names another
    stored view (``flip``)."""
    return _read_newest(dataset, backbone, store, lambda s: s.frame(layer, split, view))


def load_matrix(
    dataset: str, backbone: str, layer: str, split: str, store: str | None = None, dtype=np.float32,
    view: str = "original",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X[n, d], y[n], ids[n])`` of one layer, split and view."""
    return _read_newest(dataset, backbone, store, lambda s: s.matrix(layer, split, dtype, view))


__all__ = ["list_sets", "describe", "open_set", "load", "load_matrix", "find_set"]
