"""The feature store: layout, atomic shard writer, manifest, and the analysts' reader.

    from tlfs import features
    features.list_sets()                                   # committed sets
    features.load("cifar10", "efficientnet_lite0", "head", "test")          # DataFrame
    X, y, ids = features.load_matrix("cifar10", "efficientnet_lite0", "head", "train")
    fs = features.open_set("cifar10", "efficientnet_lite0", store=None)   # one commit: fs.matrix, fs.frame, fs.files
    features.history("cifar10", "efficientnet_lite0")                      # its versions
    features.load("cifar10", "efficientnet_lite0", "head", "test", version=2)             # an older one (or as_of=...)
"""

from __future__ import annotations

import importlib

# name -> the module that defines it: imported on first use (PEP 562), so that importing one
# light module of this package (layout, errors) does not import pandas and pyarrow
_EXPORTS = {
    "list_sets": "reader", "describe": "reader", "open_set": "reader", "find_set": "reader", "load": "reader",
    "load_matrix": "reader", "history": "reader", "resolve_store": "reader",
    "FeatureSet": "feature_set", "SetReplaced": "feature_set", "Retention": "versions",
    "StoreError": "errors", "NotCommitted": "errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tlfs.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tlfs.features.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
