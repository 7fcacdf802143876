"""The feature store: layout, atomic shard writer, manifest, and the analysts' reader.

    from tlfs import features
    features.list_sets()                                   # committed sets
    features.load("cifar10", "efficientnet_lite0", "head", "test")          # DataFrame
    X, y, ids = features.load_matrix("cifar10", "efficientnet_lite0", "head", "train")
    fs = features.open_set("cifar10", "efficientnet_lite0", version=None, store=None)   # one commit: fs.matrix, fs.frame, fs.files
"""

from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.feature_set import FeatureSet, SetReplaced
from tlfs.features.reader import describe, find_set, list_sets, load, load_matrix, open_set, resolve_store

__all__ = ["list_sets", "describe", "open_set", "find_set", "load", "load_matrix", "resolve_store", "FeatureSet",
           "StoreError", "NotCommitted", "SetReplaced"]
