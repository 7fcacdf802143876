"""The analysts' side: list, describe, open and load committed feature sets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tlfs.features import layout
from tlfs.features.errors import StoreError
from tlfs.features.feature_set import FeatureSet, SetReplaced, committed_sets, find

def resolve_store(store: str | None) -> str:
    return store or os.environ.get(layout.STORE_ENV) or layout.DEFAULT_STORE


def open_set(dataset: str, backbone: str, store: str | None = None, version: int | None = None,
             as_of=None) -> FeatureSet:
    """A handle on the committed set of ``dataset`` for ``backbone`` (a name: its newest
    backbone version; or an exact backbone version such as ``efficientnet_lite0-f18dcfbf75``):
    its newest version, or version number ``version``, or the version that was newest at
    ``as_of`` (an ISO time or a datetime). Everything read through it comes from that one
    commit (see :class:`~tlfs.features.feature_set.FeatureSet`)."""
    found = find(dataset, backbone, resolve_store(store))
    return found if version is None and as_of is None else found.at(version, as_of)


def history(dataset: str, backbone: str, store: str | None = None) -> pd.DataFrame:
    """One row per version of the set: number, time, rows, the version it was built against
    (None: extracted from scratch), images added / changed / removed / reused, and when it
    was vacuumed (if it was)."""
    rows = open_set(dataset, backbone, store).history()
    columns = ["version", "committed_at", "plan_id", "rows", "base_version", "added", "changed", "removed", "reused",
               "shard_files", "vacuumed_at"]
    return pd.DataFrame(rows, columns=columns)


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
            "plan_id": s.plan_id,
            "uri": s.uri,
        }
        for s in committed_sets(resolve_store(store))
    ]
    columns = ["dataset", "backbone", "backbone_version", "layers", "splits", "rows", "rejected", "committed_at", "plan_id",
               "uri"]
    return pd.DataFrame(rows, columns=columns)


def find_set(dataset: str, backbone: str, store: str | None = None) -> tuple[str, dict]:
    """``(uri, manifest)`` of :func:`open_set`'s set."""
    s = open_set(dataset, backbone, store=store)
    return s.uri, s.manifest


def describe(dataset: str, backbone: str, store: str | None = None, version: int | None = None, as_of=None) -> dict:
    """The manifest of the set (its newest version, or the one asked for), with its location."""
    s = open_set(dataset, backbone, store=store, version=version, as_of=as_of)
    return {"uri": s.uri, **s.manifest}


def _read_at(dataset: str, backbone: str, store: str | None, version: int | None, as_of, read):
    """``read(handle)`` on one version (the newest by default). If a vacuum removed the
    newest version's files while it was read (a newer commit came meanwhile), opens the
    newest again once: never a mix of versions. A version asked for by number or time
    is read as it is, or not at all."""
    if version is not None or as_of is not None:
        return read(open_set(dataset, backbone, store, version, as_of))
    try:
        return read(open_set(dataset, backbone, store=store))
    except SetReplaced:
        try:
            return read(open_set(dataset, backbone, store=store))
        except SetReplaced as second:
            raise StoreError(f"the feature set at {second.set_uri} changed twice while being read; try again") from None


def load(dataset: str, backbone: str, layer: str, split: str, store: str | None = None,
         view: str = "original", version: int | None = None, as_of=None) -> pd.DataFrame:
    """Rows of one layer and split: image_id, label, label_name, split, features
    (one float16 array per row); of the original image unless ``view`` names another
    stored view (``flip``); of the newest version unless ``version`` (a number) or
    ``as_of`` (a time) names an older one."""
    return _read_at(dataset, backbone, store, version, as_of, lambda s: s.frame(layer, split, view))


def load_matrix(
    dataset: str, backbone: str, layer: str, split: str, store: str | None = None, dtype=np.float32,
    view: str = "original", version: int | None = None, as_of=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X[n, d], y[n], ids[n])`` of one layer, split and view (of a version, as :func:`load`)."""
    return _read_at(dataset, backbone, store, version, as_of, lambda s: s.matrix(layer, split, dtype, view))


__all__ = ["list_sets", "describe", "open_set", "load", "load_matrix", "find_set", "history"]
