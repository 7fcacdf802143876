"""A handle on one committed feature set: the manifest it was opened at, and its files.

    fs = features.open_set("cifar10", "efficientnet_lite0")
    X, y, ids = fs.matrix("head", "train")       # float32 [n, d], int64 [n], object [n]
    df = fs.frame("block15", "test")             # image_id, label, label_name, split, features
    fs.files("head", "train")                    # the Parquet files of that commit, for any reader
    fs.views                                     # ["original"], or ["original", "flip"]
    Xf, _, _ = fs.matrix("head", "train", view="flip")  # same rows, the flipped image
    fs.version, fs.changes                       # its number in the set's history, what it changed
    old = features.open_set("cifar10", "efficientnet_lite0", version=3)    # or as_of="2026-11-20T00:00Z"

Everything read through one handle comes from the same commit: train, test and the
``plan_id`` a head records can never come from two versions of the set. A handle on an
older version finds its files where the newer commits moved them (``_retired/``); once a
vacuum removed them, reading raises :class:`SetReplaced`; open the set again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from tlfs.features import layout, versions
from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.manifest import CommittedManifest
from tlfs.features.schema import features_matrix, read_parquet
from tlfs.features.storage import fs_path, is_relative_path, read_json


class SetReplaced(StoreError):
    """The files a handle was opened at are gone: a newer commit replaced them."""

    def __init__(self, set_uri: str, missing: str):
        super().__init__(f"the version of the feature set at {set_uri} that was opened is gone (vacuumed, or "
                         f"replaced before versions were kept: {missing} is missing); open it again")
        self.set_uri = set_uri


@dataclass(frozen=True)
class FeatureSet(CommittedManifest):
    """One committed version of a feature set: its manifest read by name
    (:class:`~tlfs.features.manifest.CommittedManifest`) and its rows read from its files."""

    uri: str
    manifest: dict

    def _check(self, layer: str, split: str, view: str = layout.ORIGINAL) -> None:
        if layer not in self.manifest["layers"]:
            raise StoreError(f"layer {layer!r} is not in {self.uri}; it has {', '.join(self.manifest['layers'])}")
        if split not in self.manifest["splits"]:
            raise StoreError(f"split {split!r} is not in {self.uri}; it has {', '.join(self.manifest['splits'])}")
        if view not in self.views:
            raise StoreError(f"view {view!r} is not in {self.uri}; it has {', '.join(self.views)} "
                             "(extract with --views flip to store the flipped view)")

    def _paths(self, layer: str, split: str, view: str) -> list[str]:
        self._check(layer, split, view)
        shards = sorted((s for s in self.manifest["shards"] if s["layer"] == layer and s["split"] == split
                         and s.get("view", layout.ORIGINAL) == view), key=lambda s: s["shard"])
        return [s["path"] for s in shards]

    def files(self, layer: str, split: str, view: str = layout.ORIGINAL) -> list[str]:
        """URIs of the shard files of ``layer``, ``split`` and ``view`` in this commit, in
        shard order, where they are now (an older version's under ``_retired/``)."""
        located = []
        for relative in self._paths(layer, split, view):
            found = versions.locate(self.uri, relative)
            if found is None:
                raise SetReplaced(self.uri, f"{self.uri}/{relative}")
            located.append(found)
        return located

    def table(self, layer: str, split: str, view: str = layout.ORIGINAL) -> pa.Table:
        """image_id, label, label_name, features (one float16 list per row)."""
        tables = []
        for relative in self._paths(layer, split, view):
            tables.append(self._read(relative))
        if not tables:
            return pa.table({"image_id": pa.array([], pa.string())})
        return pa.concat_tables(tables)

    def frame(self, layer: str, split: str, view: str = layout.ORIGINAL) -> pd.DataFrame:
        """Rows of one layer and split: image_id, label, label_name, split, features."""
        frame = self.table(layer, split, view).to_pandas()
        frame.insert(min(3, len(frame.columns)), "split", split)
        return frame

    def matrix(self, layer: str, split: str, dtype=np.float32, view: str = layout.ORIGINAL
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X[n, d], y[n], ids[n])`` of one layer, split and view (rows in the same order in every view)."""
        table = self.table(layer, split, view)
        if table.num_rows == 0:
            return np.zeros((0, 0), dtype), np.zeros(0, np.int64), np.zeros(0, object)
        X = features_matrix(table.column("features"), dtype)
        y = table.column("label").to_numpy().astype(np.int64)
        ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)
        return X, y, ids

    def matrices(self, layers: list[str], split: str, dtype=np.float32, view: str = layout.ORIGINAL
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Several layers side by side (``X`` is their concatenation); rows aligned by image id."""
        blocks, y, ids = [], None, None
        for layer in layers:
            X, y_layer, ids_layer = self.matrix(layer, split, dtype, view)
            if ids is not None and not np.array_equal(ids, ids_layer):
                raise StoreError(f"layers {layers[0]} and {layer} of {self.uri} hold different rows for split {split}")
            blocks.append(X)
            y, ids = y_layer, ids_layer
        return (np.hstack(blocks) if len(blocks) > 1 else blocks[0]), y, ids


    def _read(self, relative: str) -> pa.Table:
        """One shard file, wherever it is: in place, retired (a commit may move it while it
        is read), or, after a commit interrupted before its moves, still staged."""
        fs, _ = fs_path(self.uri)

        def places():  # lazily: the staged file is searched for only if the others are gone
            yield f"{self.uri}/{relative}"
            yield layout.retired_uri(self.uri, relative)
            yield versions.locate(self.uri, relative)

        for uri in places():
            if uri is None:
                break
            try:
                with fs.open(fs_path(uri)[1], "rb") as f:
                    return read_parquet(f)
            except FileNotFoundError:
                continue
        raise SetReplaced(self.uri, f"{self.uri}/{relative}")

    def at(self, version: int | None = None, as_of=None) -> "FeatureSet":
        """The same set at another version (a number), or as it was at time ``as_of``."""
        newest = read_json(layout.manifest_uri(self.uri))
        return FeatureSet(self.uri, versions.resolve(self.uri, newest, version, as_of))

    def history(self) -> list[dict]:
        """One summary per version, oldest first (see :func:`version_summary`)."""
        return [version_summary(v) for v in versions.history(self.uri, read_json(layout.manifest_uri(self.uri)))]


def version_summary(manifest: dict) -> dict:
    changes = manifest.get("changes", {})
    return {
        "version": versions.number_of(manifest),
        "committed_at": manifest["committed_at"],
        "plan_id": manifest["plan_id"],
        "rows": manifest["rows"],
        "base_version": changes.get("base_version"),  # the version it was built against; None: extracted from scratch
        **{k: changes.get(k) for k in ("added", "changed", "removed", "reused")},
        "shard_files": len(manifest["shards"]) if "shards" in manifest else None,
        "vacuumed_at": manifest.get("vacuumed_at"),
    }


def committed_sets(store: str, dataset: str = "*") -> list[FeatureSet]:
    """Every committed set in ``store`` (of one dataset, if named): one listing."""
    fs, root = fs_path(store)
    # the store as it is now: fsspec caches listings per process (s3fs for good), and
    # other processes commit new sets and versions meanwhile
    fs.invalidate_cache()
    found = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/{dataset}/*/{layout.MANIFEST}")):
        set_root = path.rsplit("/", 1)[0]
        uri = store.rstrip("/") + set_root[len(root.rstrip("/")):]
        found.append(FeatureSet(uri, read_json(layout.manifest_uri(uri))))
    return found


def find(dataset: str, backbone: str, store: str) -> FeatureSet:
    """The committed set of ``dataset`` for a backbone name (its newest version) or an
    exact backbone version."""
    matches = [s for s in committed_sets(store, layout.check_name("dataset", dataset))
               if s.dataset == dataset and backbone in (s.manifest["backbone"], s.backbone_version)]
    if not matches:
        raise NotCommitted(f"no committed feature set for dataset {dataset!r} and backbone {backbone!r} in {store}; "
                           + _what_the_store_has(store, dataset))
    return max(matches, key=lambda s: s.manifest["committed_at"])


def _what_the_store_has(store: str, dataset: str) -> str:
    """The sets a name that found none might have meant: the dataset's backbones, else the
    store's datasets (one listing, no manifest read)."""
    fs, root = fs_path(store)
    sets = sorted({tuple(path.rsplit("/", 3)[-3:-1]) for path in fs.glob(f"{root.rstrip('/')}/*/*/{layout.MANIFEST}")})
    backbones = [version for name, version in sets if name == dataset]
    if backbones:
        return f"{dataset!r} has sets of {', '.join(backbones)} (tlfs ls)"
    if sets:
        return f"it has sets of {', '.join(sorted({name for name, _ in sets}))} (tlfs ls)"
    if is_relative_path(store) and not fs.exists(root):  # a notebook run from another folder
        return (f"there is no store there, relative to {os.getcwd()} (set TLFS_STORE, or give store=, to the store's "
                "path)")
    return f"it has none yet (tlfs extract --dataset {dataset} commits one)"
