"""The feature store: layout, atomic shard writer, manifest, and the analysts' reader.

    from tlfs import features
    features.list_sets()                                   # committed sets
    features.load("cifar10", "efficientnet_lite0", "head", "test")          # DataFrame
    X, y, ids = features.load_matrix("cifar10", "efficientnet_lite0", "head", "train")
"""

from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.reader import describe, find_set, list_sets, load, load_matrix, resolve_store

__all__ = ["list_sets", "describe", "find_set", "load", "load_matrix", "resolve_store", "StoreError", "NotCommitted"]
