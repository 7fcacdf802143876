"""Labels that look wrong (``tlfs label-issues``): each image of a split is classified by a
head that never saw it, and confident learning (Northcutt, Jiang and Chuang, 2021, through
cleanlab's ``find_label_issues``) flags the images whose given label that head finds less
likely than the class's own images usually are, the least likely first.

For the training split the probabilities are out of fold: the split is cut into ``folds``
stratified parts and each part is classified by a head fitted on the others (each head
holds out its own validation images, as ``tlfs fit`` does). Any other split is classified
by a head fitted on the training split. The heads are those of ``tlfs fit``; the images'
other stored views (a flipped copy) add training rows and are averaged over, as there."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import CannotCheck, PipelineError
from tlfs.pipeline.kept_checks import LABEL_ISSUES

ISSUE_COLUMNS = ["rank", "image_id", "split", "label_name", "suggested", "label_probability", "suggested_probability",
                 "flagged"]
DEFAULT_FOLDS = 5
SHEET_IMAGES = 60  # the most doubtful images a sheet draws
IMAGES_A_ROW = 10  # of a sheet
PAIRS_SHOWN = 10  # the commonest (given -> suggested) pairs in the summary
KEPT_AS = LABEL_ISSUES  # the name a check is kept under beside the set's heads (``--save``)


@dataclass(frozen=True)
class LabelIssuesRequest:
    dataset: str
    backbone: str
    # one layer or several side by side (("all",): every one); (): the sweep's best layer, or the deepest without one
    layers: tuple[str, ...] = ()
    split: str = "train"  # the images whose labels are checked
    head: str = "softmax"  # which head classifies them (models/names.HEADS)
    folds: int = DEFAULT_FOLDS  # of the training split's cross-validation
    views: tuple[str, ...] = ()  # stored views used; () every view the set has
    every: bool = False  # every image of the split in the table, not only the flagged ones
    store: str | None = None
    version: int | None = None


def find_label_issues(request: LabelIssuesRequest, log: Callable[[str], None] = print):
    """``(issues, summary)``: a pandas frame of ``ISSUE_COLUMNS``, one row per image whose
    label looks wrong (``flagged``; with ``request.every``, one per image of the split), the
    least likely label first (rank 1), and what it comes to."""
    from tlfs.features.reader import open_set
    from tlfs.pipeline.saved_heads import layers_to_use, split_to_use
    from tlfs.pipeline.fit import require_images, stored_views

    if request.folds < 2:
        raise PipelineError(f"folds {request.folds}: cross-validation needs at least 2")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    if "train" not in feature_set.splits:
        raise CannotCheck(f"{feature_set.uri} has no train split to fit the heads that check its labels")
    layers = layers_to_use(feature_set, request.layers)
    split_to_use(feature_set, request.split)
    require_images(feature_set, ("train", request.split), "to check labels with", CannotCheck)
    views = stored_views(feature_set, list(request.views))
    checked = {view: feature_set.matrices(layers, request.split, view=view) for view in views}
    _, y, ids = checked[views[0]]
    block_dims = [feature_set.layers[layer] for layer in layers] if len(layers) > 1 else None
    started = time.perf_counter()
    if request.split == "train":
        _enough_per_class(y, request.folds, feature_set)
        log(f"classifying each of {len(y)} train images of {feature_set.uri} by a {request.head} head on "
            f"{'+'.join(layers)} fitted on the other {request.folds - 1} of {request.folds} folds")
        proba = out_of_fold_proba(checked, len(feature_set.classes), request.head, request.folds, block_dims, log)
    else:
        train = {view: feature_set.matrices(layers, "train", view=view) for view in views}
        log(f"classifying {len(y)} {request.split} images of {feature_set.uri} by a {request.head} head on "
            f"{'+'.join(layers)} fitted on the {len(train[views[0]][1])} train images")
        proba = held_out_proba(train, np.arange(len(train[views[0]][1])), checked, len(feature_set.classes), request.head,
                               block_dims, log)
    flagged = np.zeros(len(y), bool)
    flagged[label_issue_indices(y, proba)] = True
    label_probability = proba[np.arange(len(y)), y]
    order = np.argsort(label_probability, kind="stable")  # cleanlab's own order of its flags: the least likely first
    rows = order if request.every else order[flagged[order]]
    issues = _issue_rows(rows, ids, y, proba, flagged, request.split, feature_set.classes)
    summary = _summary(request, feature_set, layers, views, y, proba, flagged, issues, time.perf_counter() - started)
    return issues, summary


def _enough_per_class(y: np.ndarray, folds: int, feature_set) -> None:
    counts = np.bincount(y, minlength=len(feature_set.classes))
    few = [f"{feature_set.classes[k]} ({n})" for k, n in enumerate(counts) if 0 < n < folds]
    if few:
        raise CannotCheck(f"cross-validation in {folds} folds needs {folds} train images of each class; "
                            f"{', '.join(few)} of {feature_set.uri} have fewer (--folds)")
    if (counts > 0).sum() < 2:
        raise CannotCheck(f"the train split of {feature_set.uri} holds one class: no label can be doubted")


def out_of_fold_proba(views: dict, classes: int, head: str, folds: int, block_dims: list[int] | None,
                      log: Callable[[str], None]) -> np.ndarray:
    """Each image's probabilities from a head fitted on the other folds (``views``: ``{view:
    (X, y, ids)}`` of the split, the original view first)."""
    from sklearn.model_selection import StratifiedKFold

    y = next(iter(views.values()))[1]
    proba = np.zeros((len(y), classes))
    parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    for number, (fitted_on, held_out) in enumerate(parts, start=1):
        def fold_log(message: str, number=number) -> None:
            log(f"fold {number}/{folds}: {message}")

        held = {view: (X[held_out], labels[held_out], ids[held_out]) for view, (X, labels, ids) in views.items()}
        proba[held_out] = held_out_proba(views, fitted_on, held, classes, head, block_dims, fold_log)
    return proba


def held_out_proba(train: dict, rows: np.ndarray, held_out: dict, classes: int, head: str, block_dims: list[int] | None,
                   log: Callable[[str], None]) -> np.ndarray:
    """The probabilities of the ``held_out`` images (``{view: (X, y, ids)}``) by a head of kind
    ``head`` fitted on the ``rows`` of ``train`` (the same shape; indices, so that no copy of
    the rows is made before the head's own), which holds out its own validation images."""
    from tlfs.models import heads
    from tlfs.models.fit_data import FitData
    from tlfs.pipeline.fit import fitting_rows, validation_split, view_averaged_proba

    fit_idx, val_idx = validation_split(next(iter(train.values()))[1][rows])
    fitted, _ = heads.fit(head, FitData(*fitting_rows(train, rows[fit_idx], rows[val_idx]), classes, block_dims), log=log)
    return view_averaged_proba(fitted, held_out)


def label_issue_indices(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """The rows whose label ``y`` confident learning finds doubtful given each row's held-out
    probabilities, ranked by the probability of the label, least first. Classes that no row
    is labelled with take no part (cleanlab expects every class among the labels)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(0, np.int64)
    within = proba[:, present]
    within = within / np.clip(within.sum(axis=1, keepdims=True), 1e-12, None)
    return np.asarray(cleanlab_issues(np.searchsorted(present, y), within, return_indices_ranked_by="self_confidence",
                                      n_jobs=1), dtype=np.int64)


def _issue_rows(rows: np.ndarray, ids: np.ndarray, y: np.ndarray, proba: np.ndarray, flagged: np.ndarray, split: str,
                classes: list[str]):
    """The table's ``rows`` (indices into the split), in their order."""
    import pandas as pd

    names = np.asarray(classes, dtype=object)
    others = proba[rows].copy()
    others[np.arange(len(rows)), y[rows]] = -1.0  # the likeliest class other than the label
    suggested = others.argmax(axis=1)
    return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "image_id": ids[rows],
                         "split": np.full(len(rows), split, dtype=object), "label_name": names[y[rows]],
                         "suggested": names[suggested], "label_probability": proba[rows, y[rows]].astype(np.float32),
                         "suggested_probability": proba[rows, suggested].astype(np.float32), "flagged": flagged[rows]},
                        columns=ISSUE_COLUMNS)


def _summary(request: LabelIssuesRequest, feature_set, layers: list[str], views: list[str], y: np.ndarray,
             proba: np.ndarray, flagged: np.ndarray, issues, seconds: float) -> dict:
    doubtful = issues[issues["flagged"]]
    pairs = (doubtful["label_name"] + " -> " + doubtful["suggested"]).value_counts()
    by_class = doubtful["label_name"].value_counts()
    return {
        "feature_set": feature_set.uri, "version": feature_set.version, "split": request.split, "layers": layers,
        "head": request.head, "views": views, "folds": request.folds if request.split == "train" else None,
        "images": int(len(y)), "issues": int(flagged.sum()), "share": round(float(flagged.sum()) / max(len(y), 1), 5),
        "held_out_accuracy": round(float((proba.argmax(axis=1) == y).mean()), 4) if len(y) else None,
        "by_class": {name: int(by_class.get(name, 0)) for name in feature_set.classes},
        "commonest": {pair: int(n) for pair, n in pairs.head(PAIRS_SHOWN).items()},
        "seconds": round(seconds, 1),
    }


def issues_sheet(request: LabelIssuesRequest, issues, layers: list[str], log: Callable[[str], None] = print) -> bytes:
    """A PNG of the table's first ``SHEET_IMAGES`` images (the most doubtful), read again from
    the set's sources, each captioned with its label, the class suggested and that class's
    probability."""
    from tlfs.features.reader import open_set
    from tlfs.pipeline.image_sheet import image_sheet, images_by_id

    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    shown = issues.head(SHEET_IMAGES)
    groups = [[(row.image_id, f"{row.rank}. {row.label_name}\n-> {row.suggested} {row.suggested_probability:.2f}")]
              for row in shown.itertuples()]
    title = (f"the {len(shown)} most doubtful {request.split} labels of {len(issues)}: the label, then the class "
             f"suggested and its probability ({request.head} on {'+'.join(layers)})")
    return image_sheet([(title, groups)], images_by_id(feature_set, set(shown["image_id"]), log=log), per_row=IMAGES_A_ROW)
