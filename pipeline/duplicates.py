"""Near-copies between splits (``tlfs duplicates``): for each image of one split (``test``),
its nearest image of another (``train``), or of the same split, by the cosine similarity
of one layer's stored features. A test image with a near-copy among the training images
makes a head's test accuracy an overestimate; a near-copy of another class is a labelling
error in one of the two. With a saved head, its test accuracy is given apart on the images
with and without a near-copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import CannotCheck, PipelineError
from tlfs.pipeline.kept_checks import NEAR_COPIES

# On CIFAR-10's Lite0 head features (docs/user-guide.md), the pairs from 0.90 up are near-copies
# (the same photo cropped, shifted, recoloured or mirrored); below 0.88 fewer and fewer are
DEFAULT_THRESHOLD = 0.90
DEFAULT_LAYER = "head"  # the layer compared where none is named and the set has it; else its deepest
PAIRS_A_ROW = 4  # on a sheet
KEPT_AS = NEAR_COPIES  # the name a check is kept under beside the set's heads (``--save``)


@dataclass(frozen=True)
class DuplicatesRequest:
    dataset: str
    backbone: str
    layer: str | None = None  # whose features are compared (None: DEFAULT_LAYER if the set has it, else its deepest)
    split: str = "test"  # the images checked
    against: str = "train"  # the images they may copy; the same split as ``split``: copies within it
    threshold: float = DEFAULT_THRESHOLD  # the cosine similarity from which a pair counts as near-copies
    head: str | None = None  # a saved head whose accuracy on ``split`` is given with and without the copies
    store: str | None = None
    version: int | None = None


def find_duplicates(request: DuplicatesRequest, log: Callable[[str], None] = print):
    """``(pairs, summary)``: a pandas frame of each checked image, its nearest image and
    their similarity, most similar first, and what it comes to (counts, shares, labels,
    the head's accuracy)."""
    import pandas as pd

    from tlfs.features.reader import open_set
    from tlfs.models.neighbours import nearest
    from tlfs.pipeline.fit import require_images

    if not 0.0 < request.threshold <= 1.0:
        raise PipelineError(f"threshold {request.threshold}: a cosine similarity above 0 and at most 1")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    for split in dict.fromkeys((request.split, request.against)):
        if split not in feature_set.splits:
            raise CannotCheck(f"{feature_set.uri} has no split {split!r} to compare; it has "
                              f"{', '.join(feature_set.splits)}")
    require_images(feature_set, (request.split, request.against), "to compare", CannotCheck)
    request = replace(request, layer=request.layer or compared_layer(feature_set))
    X, y, ids = feature_set.matrix(request.layer, request.split)
    within = request.against == request.split
    Xr, yr, ids_r = (X, y, ids) if within else feature_set.matrix(request.layer, request.against)
    log(f"comparing {len(ids)} {request.split} images with {'each other' if within else f'{len(ids_r)} {request.against} images'} "
        f"on {request.layer} ({X.shape[1]} values each)")
    index, similarity = nearest(X, None if within else Xr)
    classes = feature_set.classes
    pairs = pd.DataFrame({"image_id": ids, "label_name": [classes[k] for k in y], "nearest_id": ids_r[index],
                          "nearest_label_name": [classes[k] for k in yr[index]], "similarity": similarity})
    pairs["near_copy"] = pairs["similarity"] >= request.threshold
    pairs = pairs.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)
    summary = _summary(request, feature_set, pairs, within)
    if request.head:
        summary["head"] = _head_accuracy(feature_set, request, pairs)
    return pairs, summary


def compared_layer(feature_set) -> str:
    """The layer a check compares where none is named: ``head`` (the one the default threshold
    was read off), else the set's deepest."""
    return DEFAULT_LAYER if DEFAULT_LAYER in feature_set.layers else list(feature_set.layers)[-1]


def _summary(request: DuplicatesRequest, feature_set, pairs, within: bool) -> dict:
    copies = pairs[pairs["near_copy"]]
    if within:  # a pair within one split is found from both of its images: count the images, say so
        counted = "images with a near-copy in the same split"
    else:
        counted = f"{request.split} images with a near-copy in {request.against}"
    by_class = copies["label_name"].value_counts()
    return {
        "feature_set": feature_set.uri, "version": feature_set.version, "layer": request.layer, "split": request.split,
        "against": request.against, "threshold": request.threshold, "images": len(pairs), "counted": counted,
        "near_copies": int(len(copies)), "share": round(len(copies) / max(len(pairs), 1), 5),
        "other_label": int((copies["label_name"] != copies["nearest_label_name"]).sum()),
        "by_class": {name: int(by_class.get(name, 0)) for name in feature_set.classes},
        "similarity_quantiles": {q: round(float(pairs["similarity"].quantile(float(q))), 4)
                                 for q in ("0.5", "0.9", "0.99", "0.999")},
    }


def _head_accuracy(feature_set, request: DuplicatesRequest, pairs) -> dict:
    """The saved head's accuracy on ``request.split``: all of it, without its near-copies, and on them."""
    from tlfs.pipeline.fit import view_averaged_proba
    from tlfs.pipeline.saved_heads import load_head

    head = load_head(feature_set, request.head)
    views = {view: feature_set.matrices(head.metrics["layers"], request.split, view=view) for view in head.metrics["views"]}
    _, y, ids = next(iter(views.values()))
    right = view_averaged_proba(head, views).argmax(1) == y
    copy_ids = set(pairs.loc[pairs["near_copy"], "image_id"])
    copied = np.array([i in copy_ids for i in ids], dtype=bool)

    def accuracy(mask: np.ndarray) -> float | None:
        return round(float(right[mask].mean()), 4) if mask.any() else None

    return {"name": head.name, "all": accuracy(np.ones_like(copied)), "without_near_copies": accuracy(~copied),
            "on_near_copies": accuracy(copied), "images_without": int((~copied).sum())}


def threshold_sheet(request: DuplicatesRequest, pairs, count: int, log: Callable[[str], None] = print) -> bytes:
    """A PNG of the pairs where the threshold cuts: the ``count`` least similar pairs it
    flags and the ``count`` most similar it does not, each image beside its nearest."""
    from tlfs.features.reader import open_set
    from tlfs.pipeline.image_sheet import images_by_id, image_sheet

    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    flagged = pairs[pairs["near_copy"]].tail(count)
    below = pairs[~pairs["near_copy"]].head(count)
    sections = [(f"flagged: the {len(flagged)} least similar pairs at or above {request.threshold}", flagged),
                (f"not flagged: the {len(below)} most similar pairs below {request.threshold}", below)]
    captioned = [(title, [[(row.image_id, f"{row.similarity:.3f} {row.label_name}"), (row.nearest_id, row.nearest_label_name)]
                          for row in rows.itertuples()]) for title, rows in sections]
    ids = {image_id for _, pairs in captioned for pair in pairs for image_id, _ in pair}
    return image_sheet(captioned, images_by_id(feature_set, ids, log=log), per_row=PAIRS_A_ROW)
