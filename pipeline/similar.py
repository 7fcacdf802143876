"""Search a feature set by example (``tlfs similar``): each given image goes the way the
set's images went (decoded by the same rule, through the same backbone version and
precision, its features rounded to float16 as stored), and its most similar stored images
are found by the cosine similarity of one layer's features. An image that cannot be
decoded keeps its reason; the others are searched all the same."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

RESULT_COLUMNS = ["image", "rank", "image_id", "split", "label_name", "similarity", "reason"]
RESULTS_A_ROW = 1  # of a sheet: each image with its matches on its own row


@dataclass(frozen=True)
class SimilarRequest:
    dataset: str
    backbone: str
    images: tuple[str, ...]  # image files, folders (every image below them) or globs, any fsspec URI
    layer: str = "head"  # whose features are compared
    splits: tuple[str, ...] = ()  # the stored images searched; () every split
    k: int = 5  # matches an image
    store: str | None = None
    version: int | None = None
    device: str = "cpu"
    batch_size: int | None = None


def similar_images(request: SimilarRequest, log: Callable[[str], None] = print, show_progress: bool = False):
    """A pandas frame of ``RESULT_COLUMNS``: for each image of ``request.images``, in the
    order they are listed, its ``k`` most similar stored images (rank 1 the most similar), or
    one row with the reason it could not be decoded (rank 0)."""
    import pandas as pd

    from tlfs.features.reader import open_set
    from tlfs.models.neighbours import most_similar
    from tlfs.pipeline.image_files import (count_of, decoded_chunks, features_as_stored, list_images, per_image,
                                           session_as_stored)

    if request.k < 1:
        raise PipelineError(f"k {request.k}: at least one match an image")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    splits = _searched_splits(feature_set, request)
    X, ids, split_of, labels = _stored(feature_set, request.layer, splits)
    session, runtime, size = session_as_stored(feature_set, [request.layer], request.device, request.batch_size, log)
    paths = list_images(request.images)
    log(f"searching {len(ids)} {'+'.join(splits)} images of {feature_set.uri} for the {request.k} most like each of "
        f"{count_of(len(paths))}, on {request.layer} ({X.shape[1]} values each), on {runtime.device} ({runtime.precision})")
    started, rows = time.perf_counter(), []
    for chunk, images in decoded_chunks(paths, size, "similar", show_progress):
        queries = per_image(images, runtime.batch_size, lambda batch: features_as_stored(session, batch, [request.layer]))
        searched = [n for n, q in enumerate(queries) if not isinstance(q, str)]
        found = most_similar(np.stack([queries[n] for n in searched]), X, request.k) if searched else None
        place = {n: p for p, n in enumerate(searched)}
        for n, path in enumerate(chunk):
            if n not in place:
                rows.append((path, 0, None, None, None, float("nan"), queries[n]))
                continue
            indices, similarities = found[0][place[n]], found[1][place[n]]
            rows += [(path, rank, ids[i], split_of[i], labels[i], float(s), None)
                     for rank, (i, s) in enumerate(zip(indices, similarities), start=1)]
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    seconds = time.perf_counter() - started
    log(f"searched for {count_of(len(paths))} in {seconds:.1f}s ({len(paths) / max(seconds, 1e-9):.1f} images/s; "
        f"{int((results['rank'] == 0).sum())} could not be decoded)")
    return results


def _searched_splits(feature_set, request: SimilarRequest) -> list[str]:
    if request.layer not in feature_set.layers:
        raise PipelineError(f"{feature_set.uri} has no layer {request.layer!r}; it has {', '.join(feature_set.layers)}")
    unknown = [s for s in request.splits if s not in feature_set.splits]
    if unknown:
        raise PipelineError(f"{feature_set.uri} has no split {', '.join(unknown)}; it has {', '.join(feature_set.splits)}")
    return list(request.splits or feature_set.splits)


def _stored(feature_set, layer: str, splits: list[str]):
    """``(X, ids, split, label name)`` of every stored image of ``splits``, row for row."""
    blocks = [(split, feature_set.matrix(layer, split)) for split in splits]
    blocks = [(split, block) for split, block in blocks if len(block[2])]
    if not blocks:
        raise PipelineError(f"{feature_set.uri} holds no images of {', '.join(splits)} to search")
    X = np.vstack([X for _, (X, _, _) in blocks])
    ids = np.concatenate([ids for _, (_, _, ids) in blocks])
    split_of = np.concatenate([np.full(len(ids), split, dtype=object) for split, (_, _, ids) in blocks])
    labels = np.asarray([feature_set.classes[k] for _, (_, y, _) in blocks for k in y], dtype=object)
    return X, ids, split_of, labels


def results_sheet(request: SimilarRequest, results, log: Callable[[str], None] = print) -> bytes:
    """A PNG: each searched image (as the set would decode it) beside its matches, each
    captioned with its similarity and class, the stored images read again from the set's
    sources."""
    from tlfs.features.reader import open_set
    from tlfs.pipeline.image_files import decoded
    from tlfs.pipeline.image_sheet import images_by_id, image_sheet
    from tlfs.pipeline.lineage import model_of

    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    queries = list(dict.fromkeys(results["image"]))
    size = model_of(feature_set).card["preprocessing"]["input_size"]
    matches = results[results["rank"] > 0]
    images = images_by_id(feature_set, set(matches["image_id"]), log=log)
    images.update({f"query:{path}": pixels for path, pixels in zip(queries, decoded(queries, size))})
    groups = [[(f"query:{path}", path.rsplit("/", 1)[-1])]
              + [(row.image_id, f"{row.similarity:.3f} {row.label_name}")
                 for row in matches[matches["image"] == path].itertuples()] for path in queries]
    return image_sheet([(f"each image, then its {request.k} most similar stored images on {request.layer}", groups)],
                       images, per_row=RESULTS_A_ROW)
