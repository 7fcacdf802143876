"""Which of a pool of unlabelled images a person should label next (``tlfs label-next``):
each image goes the way the set's images went (as ``tlfs predict`` sends it) through a saved
head, and the images it is least sure of, spread over what they look like, are chosen
(``models/uncertainty.choose_to_label``). Labelled and added to the dataset's source, they
are what the next incremental extraction and fit learn most from. An image the set already
holds (the same file: its features as stored) is labelled already, so it is left out.

The pool's features are kept beside the set (``features/pool_cache.py``): the next round, with
the head refitted on the images labelled since, runs only new or changed images through the
backbone, and the rest costs the head's scoring alone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.features.layout import ORIGINAL
from tlfs.features.pool_cache import PoolFeatures, pool_uri, read_pool, write_pool
from tlfs.features.reader import open_set
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import bit_depth_of, pixels_rule
from tlfs.pipeline.image_files import (count_of, decoded, decoded_chunks, listed_images, per_image,
                                       session_as_stored, view_features)
from tlfs.pipeline.predict import head_probabilities
from tlfs.pipeline.sources.hashing import fingerprint_info
from tlfs.pipeline.saved_heads import default_head, load_head

DEFAULT_COUNT = 100
SCORED_AT_ONCE = 8192  # pool images through the head at once: bounds its memory
SHEET_IMAGES = 60  # the first chosen images a sheet draws
IMAGES_A_ROW = 10  # of a sheet
# cosine to a stored image from which a pool image is one the set holds: the same file gives
# 0.9999998 or more on every layer (its features as stored, up to float16 rounding); distinct images
# of one flat colour under noise reach 0.99990 on Lite0's 24-d block2 (tests/pipeline/test_report.py's
# set), re-encoded, resized or cropped copies far less on the deeper layers heads use
STORED_SIMILARITY = 0.99999
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
    cache: bool = True  # read and keep the pool's features in the set's _pool/ (features/pool_cache.py)
    decode_workers: int = 0  # processes reading and decoding the images (0: one a core beside a GPU)
    exclude: tuple[str, ...] = ()  # earlier queues (tables with an image column): their images are left out


def label_next(request: LabelNextRequest, log: Callable[[str], None] = print, show_progress: bool = False):
    """``(chosen, summary)``: a table of the ``count`` images to label first, least sure first
    (``CHOSEN_COLUMNS``: the head's likeliest class and its probability, the runner-up and
    its, the margin between them), and what the pool held."""
    from tlfs.models.neighbours import unit_layers
    from tlfs.models.uncertainty import choose_to_label, margins

    if request.count < 1:
        raise PipelineError(f"count {request.count}: at least 1 image to choose")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    head = load_head(feature_set, request.head or default_head(feature_set))
    layers = head.metrics["layers"]
    listed = listed_images(request.images)
    queued = _queued(request.exclude, {image for image, _ in listed}, log)
    listed, pool = [(image, info) for image, info in listed if image not in queued], len(listed)
    if not listed:
        raise PipelineError(f"every image listed is in {', '.join(request.exclude)}: nothing to choose from")
    log(f"scoring {count_of(len(listed))} with {head.name} ({'+'.join(layers)}, views {'+'.join(head.metrics['views'])}) "
        f"of {feature_set.uri}, to choose {request.count}")
    started = time.perf_counter()
    widths = [feature_set.layers[layer] for layer in layers]
    scored = _pool_features(feature_set, layers, [*head.metrics["views"], ORIGINAL], listed, request, show_progress, log)
    kept, rejected = scored.images, scored.rejected
    probabilities = np.vstack([head_probabilities(head, {view: matrix[start:start + SCORED_AT_ONCE]
                                                         for view, matrix in scored.features.items()})
                               for start in range(0, len(kept), SCORED_AT_ONCE)])
    features = unit_layers(scored.features[ORIGINAL], widths)
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
               "bit_depth": bit_depth_of(feature_set.lineage),  # how its images are decoded (the sheet's too)
               "layers": layers, "pool": pool, "excluded": pool - len(listed), "scored": len(kept),
               "rejected": rejected,
               "from_cache": scored.from_cache,
               "already_stored": len(stored), "chosen": len(chosen),
               "median_margin_chosen": round(float(np.median(margin[chosen])), 4),
               "median_margin_pool": round(float(np.median(margin[new])), 4),  # of the new images
               "chosen_by_predicted_class": table["label"].value_counts().to_dict(), "seconds": round(seconds, 1)}
    log(f"chose {count_of(len(chosen))} of {len(new)} new ({len(stored)} already stored, {rejected} could not be "
        f"decoded, {scored.from_cache} scored from the pool's kept features) in {seconds:.1f}s: "
        f"median margin {summary['median_margin_chosen']:.3f} against {summary['median_margin_pool']:.3f} over the pool")
    return table, summary


@dataclass(frozen=True)
class ScoredPool:
    images: list[str]  # those decoded, in the order listed
    features: dict[str, np.ndarray]  # each view's features of them, their layers side by side, as stored
    rejected: int  # images that could not be decoded (each named with its reason)
    from_cache: int  # images whose features were kept from an earlier round


def _pool_features(feature_set, layers: list[str], views: list[str], listed: list[tuple[str, dict]],
                   request: LabelNextRequest, show_progress: bool, log: Callable[[str], None]) -> ScoredPool:
    """Each view's features of the listed images: those kept from an earlier round read back, the
    rest run through the set's backbone version (opened only if any are) and kept for the next."""
    views = list(dict.fromkeys(views))
    width = sum(feature_set.layers[layer] for layer in layers)
    keys = [(name, fingerprint_info(info)) for name, info in listed]  # what incremental runs compare
    caches = {view: _kept_features(feature_set, view, layers, width, log) for view in views} if request.cache else {}
    hit = np.full(len(keys), bool(caches))
    for cache in caches.values():
        hit &= cache.holds(keys)
    hits = [key for key, kept in zip(keys, hit) if kept]
    misses = dict(key for key, kept in zip(keys, hit) if not kept)  # image: fingerprint
    computed, matrices, rejected = _through_backbone(feature_set, layers, views, list(misses), request, show_progress,
                                                     log)
    if caches and computed:
        _keep(caches, computed, [misses[image] for image in computed], matrices, {image for image, _ in keys}, log)
    # each image's row in the kept rows followed by the computed ones; one that could not be decoded has none
    position = {image: row for row, (image, _) in enumerate(hits)}
    position.update({image: len(hits) + row for row, image in enumerate(computed)})
    images = [image for image, _ in keys if image in position]
    take = [position[image] for image in images]
    if not images:
        raise PipelineError(f"{count_of(len(listed))} given and none could be decoded: nothing to choose from")
    features = {view: np.concatenate([caches[view].features(hits) if caches else matrices[view][:0], matrices[view]])
                for view in views}
    return ScoredPool(images, {view: matrix[take] for view, matrix in features.items()}, rejected, len(hits))


def _kept_features(feature_set, view: str, layers: list[str], width: int, log: Callable[[str], None]) -> PoolFeatures:
    """The pool's features of ``view`` kept in the set's ``_pool/`` (none yet: an empty cache)."""
    precision = feature_set.lineage["runtime"]["precision"]
    uri = pool_uri(feature_set.uri, view, layers, pixels_rule(bit_depth_of(feature_set.lineage)), precision,
                   feature_set.lineage["onnx_file_sha256"] if precision == "int8" else None)
    cache, reason = read_pool(uri, width)
    if reason:
        log(f"note: the pool's kept features in {uri} could not be read ({reason}): its images are run again")
    return cache


def _keep(caches: dict[str, PoolFeatures], images: list[str], fingerprints: list[str], matrices: dict[str, np.ndarray],
          listed: set[str], log: Callable[[str], None]) -> None:
    """Adds the images run through the backbone to each view's kept features (of the ``listed``
    pool's round)."""
    for view, cache in caches.items():
        try:
            write_pool(cache, images, fingerprints, matrices[view], listed)
        except OSError as exc:
            log(f"note: could not keep the pool's features in {cache.uri} ({exc}): the next round runs them again")
            return


def _through_backbone(feature_set, layers: list[str], views: list[str], images: list[str],
                      request: LabelNextRequest, show_progress: bool, log: Callable[[str], None]
                      ) -> tuple[list[str], dict[str, np.ndarray], int]:
    """``(images decoded, each view's features of them as stored, images that could not be
    decoded)``: each of those is named with its reason."""
    width = sum(feature_set.layers[layer] for layer in layers)
    decoded_images, rows, rejected = [], [], 0
    if images:
        session, runtime, size = session_as_stored(feature_set, layers, request.device, request.batch_size, log)
        log(f"{count_of(len(images))} through the backbone on {runtime.device} ({runtime.precision})")

        def compute(batch: np.ndarray) -> np.ndarray:
            return np.hstack(list(view_features(session, batch, layers, views).values()))

        for chunk, pixels in decoded_chunks(images, size, "label-next", show_progress, request.decode_workers,
                                            runtime.device, bit_depth_of(feature_set.lineage)):
            for image, row in zip(chunk, per_image(pixels, runtime.batch_size, compute)):
                if isinstance(row, str):
                    rejected += 1
                    log(f"  {image}: not scored ({row})")
                    continue
                decoded_images.append(image)
                rows.append(row)
    matrix = np.vstack(rows) if rows else np.zeros((0, width * len(views)), np.float32)
    return decoded_images, {view: matrix[:, k * width:(k + 1) * width] for k, view in enumerate(views)}, rejected


def _queued(tables: tuple[str, ...], listed: set[str], log: Callable[[str], None]) -> set[str]:
    """The images of earlier queues (``tables``' image column) among those ``listed``, each
    table's share told."""
    from tlfs.pipeline.tables import read_table

    queued: set[str] = set()
    for table in tables:
        images = set(read_table(table, "image"))
        log(f"left out {count_of(len(images & listed))} of {table} ({len(images)} listed there)")
        queued |= images & listed
    return queued


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


def chosen_sheet(table, summary: dict) -> bytes:
    """PNG bytes: the first ``SHEET_IMAGES`` chosen images (of ``label_next``'s table and
    summary), each with its rank and the two classes the head hesitates between."""
    from tlfs.pipeline.image_sheet import THUMB, image_sheet

    shown = table.head(SHEET_IMAGES)
    title = (f"the {len(shown)} images to label first of {summary['scored'] - summary['already_stored']} new: the two "
             f"classes {summary['head']} hesitates between")
    images = dict(zip(shown["image"], decoded(list(shown["image"]), 2 * THUMB, summary["bit_depth"])))  # big enough for a thumbnail
    groups = [[(row.image, f"{row.rank}. {row.label} {row.probability:.2f}\n or {row.runner_up} "
                           f"{row.runner_up_probability:.2f}" if row.runner_up else f"{row.rank}. {row.label}")]
              for row in shown.itertuples()]
    return image_sheet([(title, groups)], images, per_row=IMAGES_A_ROW)
