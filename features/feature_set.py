"""A handle on one committed feature set: the manifest it was opened at, and its files.

    fs = features.open_set("cifar10", "efficientnet_lite0")
    X, y, ids = fs.matrix("head", "train")       # float32 [n, d], int64 [n], object [n]
    df = fs.frame("block15", "test")             # image_id, label, label_name, split, features
    fs.files("head", "train")                    # the Parquet files of that commit, for any reader
    fs.views                                     # ["original"], or ["original", "flip"]
    Xf, _, _ = fs.matrix("head", "train", view="flip")  # same rows, the flipped image

Everything read through one handle comes from the same commit: train, test and the
``plan_id`` a head records can never come from two versions of the set. If a later commit
removed the files the handle was opened at, reading raises :class:`SetReplaced`; open the
set again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features import layout
from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.schema import features_matrix
from tlfs.features.storage import fs_path, read_json


class SetReplaced(StoreError):
    """The files a handle was opened at are gone: a newer commit replaced them."""

    def __init__(self, set_uri: str, missing: str):
        super().__init__(f"the feature set at {set_uri} was replaced by a newer commit since it was opened "
                         f"({missing} is gone); open it again")
        self.set_uri = set_uri


@dataclass(frozen=True)
class FeatureSet:
    uri: str
    manifest: dict

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def backbone_version(self) -> str:
        return self.manifest["backbone_version"]

    @property
    def plan_id(self) -> str:
        return self.manifest["plan_id"]

    @property
    def layers(self) -> dict[str, int]:
        """Layer name -> feature width, shallow to deep."""
        return dict(self.manifest["layers"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def views(self) -> list[str]:
        """The stored views: always ``original``; ``flip`` where extracted with ``--views flip``."""
        return list(self.manifest.get("views", [layout.ORIGINAL]))

    def _check(self, layer: str, split: str, view: str = layout.ORIGINAL) -> None:
        if layer not in self.manifest["layers"]:
            raise StoreError(f"layer {layer!r} is not in {self.uri}; it has {', '.join(self.manifest['layers'])}")
        if split not in self.manifest["splits"]:
            raise StoreError(f"split {split!r} is not in {self.uri}; it has {', '.join(self.manifest['splits'])}")
        if view not in self.views:
            raise StoreError(f"view {view!r} is not in {self.uri}; it has {', '.join(self.views)} "
                             "(extract with --views flip to store the flipped view)")

    def files(self, layer: str, split: str, view: str = layout.ORIGINAL) -> list[str]:
        """URIs of the shard files of ``layer``, ``split`` and ``view`` in this commit, in shard order."""
        self._check(layer, split, view)
        shards = sorted((s for s in self.manifest["shards"] if s["layer"] == layer and s["split"] == split
                         and s.get("view", layout.ORIGINAL) == view), key=lambda s: s["shard"])
        return [f"{self.uri}/{s['path']}" for s in shards]

    def table(self, layer: str, split: str, view: str = layout.ORIGINAL) -> pa.Table:
        """image_id, label, label_name, features (one float16 list per row)."""
        tables = []
        for uri in self.files(layer, split, view):
            fs, path = fs_path(uri)
            try:
                with fs.open(path, "rb") as f:
                    tables.append(pq.read_table(f))
            except FileNotFoundError:
                raise SetReplaced(self.uri, uri) from None
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


def committed_sets(store: str, dataset: str = "*") -> list[FeatureSet]:
    """Every committed set in ``store`` (of one dataset, if named): one listing."""
    fs, root = fs_path(store)
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
        raise NotCommitted(f"no committed feature set for dataset {dataset!r} and backbone {backbone!r} in {store}")
    return max(matches, key=lambda s: s.manifest["committed_at"])
