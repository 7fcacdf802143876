"""The feature store: layout, atomic shard writer, manifest, and the analysts' reader.

    from tlfs import features
    features.list_sets()                                   # committed sets
    features.load("cifar10", "efficientnet_lite0", "head", "test")          # DataFrame
    X, y, ids = features.load_matrix("cifar10", "efficientnet_lite0", "head", "train")
    fs = features.open_set("cifar10", "efficientnet_lite0", store=None)   # one commit: fs.matrix, fs.frame, fs.files
    features.history("cifar10", "efficientnet_lite0")                      # its versions
    features.load("cifar10", "efficientnet_lite0", "head", "test", version=2)             # an older one (or as_of=...)
"""

from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.feature_set import FeatureSet, SetReplaced
from tlfs.features.reader import describe, find_set, history, list_sets, load, load_matrix, open_set, resolve_store
from tlfs.features.versions import Retention

__all__ = ["list_sets", "describe", "open_set", "find_set", "load", "load_matrix", "history", "resolve_store",
           "FeatureSet", "Retention", "StoreError", "NotCommitted", "SetReplaced"]
