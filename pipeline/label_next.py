"""Which of a pool of unlabelled images a person should label next (``tlfs label-next``):
each image goes the way the set's images went (as ``tlfs predict`` sends it) through a saved
head, and the images it is least sure of, spread over what they look like, are chosen
(``models/uncertainty.choose_to_label``). Labelled and added to the dataset's source, they
are what the next incremental extraction and fit learn most from. An image the set already
holds (the same file: its features as stored) is labelled already, so it is left out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.features.reader import open_set
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_files import count_of, decoded, decoded_chunks, list_images, per_image, session_as_stored
from tlfs.pipeline.predict import head_scores
from tlfs.pipeline.saved_heads import SavedHead, best_head, load_head

DEFAULT_COUNT = 100
SHEET_IMAGES = 60  # the first chosen images a sheet draws
IMAGES_A_ROW = 10  # of a sheet
# cosine to a stored image from which a pool image is one the set holds (the same file gives 1: its
# features as stored; a near-copy re-encoded, resized or cropped stays well below)
STORED_SIMILARITY = 0.999
CHOSEN_COLUMNS = ["rank", "image", "label", "probability", "runner_up", "runner_up_probability", "margin"]


@dataclass(frozen=True)
class LabelNextRequest:
    dataset: str
    backbone: str
    images: tuple[str, ...]  # the unlabelled pool: files, folders (every image below them) or globs, any fsspec URI
    count: int = DEFAULT_COUNT  # images to choose
    head: str | None = None  # a saved head's folder under the set's _heads/; None: the sweep's
    store: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    version: int | None = None  # of the set (None: the newest)


def label_next(request: LabelNextRequest, log: Callable[[str], None] = print, show_progress: bool = False):
    """``(chosen, summary)``: a table of the ``count`` images to label first, least sure first
    (``CHOSEN_COLUMNS``: the head's likeliest class and its probability, the runner-up and
    its, the margin between them), and what the pool held."""
    from tlfs.models.uncertainty import choose_to_label, margins

    if request.count < 1:
        raise PipelineError(f"count {request.count}: at least 1 image to choose")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    head = load_head(feature_set, request.head or best_head(feature_set))
    layers = head.metrics["layers"]
    session, runtime, size = session_as_stored(feature_set, layers, request.device, request.batch_size, log)
    paths = list_images(request.images)
    log(f"scoring {count_of(len(paths))} with {head.name} ({'+'.join(layers)}, views {'+'.join(head.metrics['views'])}) "
        f"of {feature_set.uri}, on {runtime.device} ({runtime.precision}), to choose {request.count}")
    started = time.perf_counter()
    widths = [feature_set.layers[layer] for layer in layers]
    kept, scores, rejected = _scored(paths, size, runtime.batch_size, lambda b: _scores(head, session, b, widths),
                                     show_progress, log)
    probabilities, features = scores[:, :len(head.classes)], scores[:, len(head.classes):]
    margin = margins(probabilities)
    stored = _already_stored(feature_set, layers, widths, features, margin, request.count)
    if stored:
        shown = ", ".join(f"{kept[row]} = {image_id}" for row, image_id in list(stored.items())[:3])
        log(f"left out {count_of(len(stored))} the set already holds (cosine >= {STORED_SIMILARITY} to a stored "
            f"image): {shown}{', ...' if len(stored) > 3 else ''}")
    new = np.setdiff1d(np.arange(len(kept)), list(stored))
    if not len(new):
        raise PipelineError(f"every image scored is one {feature_set.uri} already holds: nothing to choose from")
    chosen = new[choose_to_label(margin[new], features[new], request.count)]
    table = _chosen_table([kept[i] for i in chosen], probabilities[chosen], margin[chosen], head.classes)
    seconds = time.perf_counter() - started
    summary = {"dataset": feature_set.dataset, "set_uri": feature_set.uri,
               "backbone_version": feature_set.backbone_version, "head": head.name,
               "layers": layers, "pool": len(paths), "scored": len(kept), "rejected": rejected,
               "already_stored": len(stored), "chosen": len(chosen),
               "median_margin_chosen": round(float(np.median(margin[chosen])), 4),
               "median_margin_pool": round(float(np.median(margin[new])), 4),  # of the new images
               "chosen_by_predicted_class": table["label"].value_counts().to_dict(), "seconds": round(seconds, 1)}
    log(f"chose {count_of(len(chosen))} of {len(new)} new ({len(stored)} already stored, {rejected} could not be "
        f"decoded) in {seconds:.1f}s: "
        f"median margin {summary['median_margin_chosen']:.3f} against {summary['median_margin_pool']:.3f} over the pool")
    return table, summary


def _scored(paths: list[str], input_size: int, batch_size: int, compute: Callable[[np.ndarray], np.ndarray],
            show_progress: bool, log: Callable[[str], None]) -> tuple[list[str], np.ndarray, int]:
    """``(paths scored, their rows of compute, images that could not be decoded)``; each of
    those is named with its reason."""
    kept, rows, rejected = [], [], 0
    for chunk, images in decoded_chunks(paths, input_size, "label-next", show_progress):
        for path, row in zip(chunk, per_image(images, batch_size, compute)):
            if isinstance(row, str):
                rejected += 1
                log(f"  {path}: not scored ({row})")
                continue
            kept.append(path)
            rows.append(row)
    if not rows:
        raise PipelineError(f"{count_of(len(paths))} given and none could be decoded: nothing to choose from")
    return kept, np.vstack(rows), rejected


def _chosen_table(images: list[str], probabilities: np.ndarray, margin: np.ndarray, classes: list[str]):
    """The chosen images in order, as ``CHOSEN_COLUMNS``."""
    import pandas as pd

    order = np.argsort(-probabilities, axis=1, kind="stable")
    rows = np.arange(len(images))
    runner_up = order[:, 1] if len(classes) > 1 else None
    return pd.DataFrame({
        "rank": rows + 1,
        "image": images,
        "label": [classes[k] for k in order[:, 0]],
        "probability": probabilities[rows, order[:, 0]].astype(float),
        "runner_up": [classes[k] for k in runner_up] if runner_up is not None else None,
        "runner_up_probability": probabilities[rows, runner_up].astype(float) if runner_up is not None else None,
        "margin": margin.astype(float),
    }, columns=CHOSEN_COLUMNS)


def _already_stored(feature_set, layers: list[str], widths: list[int], features: np.ndarray, margin: np.ndarray,
                    count: int) -> dict[int, str]:
    """The pool rows the set already holds, by the stored image they are (its id), of those the
    choice would consider: the candidates of smallest margin, checked until ``CANDIDATES_PER_PICK
    * count`` of them are new (or the pool is all checked)."""
    from tlfs.models.neighbours import nearest_unit, unit_layers
    from tlfs.models.uncertainty import CANDIDATES_PER_PICK

    matrices = [feature_set.matrices(layers, split) for split in feature_set.splits]
    references = unit_layers(np.vstack([X for X, _, _ in matrices]), widths)
    ids = [image_id for _, _, split_ids in matrices for image_id in split_ids]
    order = np.argsort(margin, kind="stable")
    checked, stored = np.zeros(len(margin), bool), {}
    while True:
        window = order[~np.isin(order, list(stored))][:CANDIDATES_PER_PICK * count]
        unchecked = window[~checked[window]]
        if not len(unchecked):
            return stored
        index, similarity = nearest_unit(features[unchecked], references)
        checked[unchecked] = True
        stored.update({int(row): ids[i] for row, i, s in zip(unchecked, index, similarity) if s >= STORED_SIMILARITY})


def _scores(head: SavedHead, session, batch: np.ndarray, widths: list[int]) -> np.ndarray:
    """A uint8 batch's rows: the head's probabilities (averaged over its views, as ``tlfs
    predict`` gives them), then the original view's features with each layer at unit length
    (what the choice spreads over)."""
    from tlfs.models.neighbours import unit_layers

    probabilities, original = head_scores(head, session, batch, original=True)
    return np.column_stack([probabilities, unit_layers(original, widths)])


def chosen_sheet(table, summary: dict) -> bytes:
    """PNG bytes: the first ``SHEET_IMAGES`` chosen images (of ``label_next``'s table and
    summary), each with its rank and the two classes the head hesitates between."""
    from tlfs.pipeline.image_sheet import THUMB, image_sheet

    shown = table.head(SHEET_IMAGES)
    title = (f"the {len(shown)} images to label first of {summary['scored'] - summary['already_stored']} new: the two "
             f"classes {summary['head']} hesitates between")
    images = dict(zip(shown["image"], decoded(list(shown["image"]), 2 * THUMB)))  # big enough for a thumbnail
    groups = [[(row.image, f"{row.rank}. {row.label} {row.probability:.2f}\n or {row.runner_up} "
                           f"{row.runner_up_probability:.2f}" if row.runner_up else f"{row.rank}. {row.label}")]
              for row in shown.itertuples()]
    return image_sheet([(title, groups)], images, per_row=IMAGES_A_ROW)
