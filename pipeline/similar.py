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
from tlfs.pipeline.image_decode import bit_depth_of

RESULT_COLUMNS = ["image", "rank", "image_id", "split", "label_name", "similarity", "reason"]
RESULTS_A_ROW = 1  # of a sheet: each image with its matches on its own row
SHEET_IMAGES = 50  # images searched for that a sheet draws, the first ones: a row each


@dataclass(frozen=True)
class SimilarRequest:
    dataset: str
    backbone: str
    images: tuple[str, ...] = ()  # image files, folders (every image below them) or globs, any fsspec URI
    ids: tuple[str, ...] = ()  # or stored images, by id (test/cat/0003.jpg): their stored features are searched for
    layer: str = "head"  # whose features are compared
    splits: tuple[str, ...] = ()  # the stored images searched; () every split
    k: int = 5  # matches an image
    store: str | None = None
    version: int | None = None
    device: str = "cpu"
    batch_size: int | None = None
    decode_workers: int = 0  # processes reading and decoding the images (0: one a core beside a GPU)


def similar_images(request: SimilarRequest, log: Callable[[str], None] = print, show_progress: bool = False):
    """A pandas frame of ``RESULT_COLUMNS``: for each image of ``request.images`` (or stored
    image of ``request.ids``), in the order they are given, its ``k`` most similar stored
    images (rank 1 the most similar; one searched for by its id is not its own match), or one row with
    the reason it has none (rank 0)."""
    import pandas as pd

    from tlfs.features.reader import open_set
    from tlfs.pipeline.image_files import (count_of, decoded_chunks, features_as_stored, list_images, per_image,
                                           session_as_stored)

    if request.k < 1:
        raise PipelineError(f"k {request.k}: at least one match an image")
    if bool(request.images) == bool(request.ids):
        raise PipelineError("name the images searched for either as files (folders, globs) or as stored ids, one of the two")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    splits = _searched_splits(feature_set, request)
    stored = _stored(feature_set, request.layer, splits)
    started = time.perf_counter()
    if request.ids:
        log(f"searching {len(stored.ids)} {'+'.join(splits)} images of {feature_set.uri} for the {request.k} most like "
            f"each of {count_of(len(request.ids), 'stored image')}, on {request.layer} ({stored.X.shape[1]} values each)")
        rows = _matches(list(request.ids), _stored_features(feature_set, request.layer, request.ids, stored), stored,
                        request.k, by_id=True)
    else:
        session, runtime, size = session_as_stored(feature_set, [request.layer], request.device, request.batch_size, log)
        paths = list_images(request.images)
        log(f"searching {len(stored.ids)} {'+'.join(splits)} images of {feature_set.uri} for the {request.k} most like "
            f"each of {count_of(len(paths))}, on {request.layer} ({stored.X.shape[1]} values each), on {runtime.device} "
            f"({runtime.precision})")
        rows = []
        for chunk, images in decoded_chunks(paths, size, "similar", show_progress, request.decode_workers,
                                            runtime.device, bit_depth_of(feature_set.lineage)):
            queries = per_image(images, runtime.batch_size,
                                lambda batch: features_as_stored(session, batch, [request.layer]))
            rows += _matches(chunk, queries, stored, request.k)
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    seconds, searched = time.perf_counter() - started, results["image"].nunique()
    log(f"searched for {count_of(searched)} in {seconds:.1f}s ({searched / max(seconds, 1e-9):.1f} images/s; "
        f"{int((results['rank'] == 0).sum())} without matches)")
    return results


@dataclass(frozen=True)
class Stored:
    """Every stored image searched, row for row."""

    X: np.ndarray  # float32 [n, d]
    ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray  # class names


def _matches(names: list[str], queries: list[np.ndarray | str], stored: Stored, k: int, by_id: bool = False) -> list[tuple]:
    """The result rows of each query: its ``k`` most similar stored images, or its reason.
    ``by_id``: each query is the stored image of that name, left out of its own matches."""
    from tlfs.models.neighbours import most_similar

    searched = [n for n, q in enumerate(queries) if not isinstance(q, str)]
    place = {n: p for p, n in enumerate(searched)}
    if searched:
        indices, similarities = most_similar(np.stack([queries[n] for n in searched]), stored.X, k + by_id)
    rows = []
    for n, name in enumerate(names):
        if n not in place:
            rows.append((name, 0, None, None, None, float("nan"), queries[n]))
            continue
        found = [(i, s) for i, s in zip(indices[place[n]], similarities[place[n]]) if not (by_id and stored.ids[i] == name)]
        rows += [(name, rank, stored.ids[i], stored.splits[i], stored.labels[i], float(s), None)
                 for rank, (i, s) in enumerate(found[:k], start=1)]
    return rows


def _stored_features(feature_set, layer: str, ids: tuple[str, ...], stored: Stored) -> list[np.ndarray | str]:
    """Each id's stored features (of whichever split holds it: the searched ones are at
    hand, the others read only for ids not among them), or why it has none."""
    row = {image_id: n for n, image_id in enumerate(stored.ids)}
    found = {i: stored.X[row[i]] for i in ids if i in row}
    wanted = set(ids)
    for split in sorted(set(feature_set.splits) - set(stored.splits)):
        if wanted <= found.keys():
            break
        X, _, split_ids = feature_set.matrix(layer, split)
        found.update((i, X[n]) for n, i in enumerate(split_ids) if i in wanted)
    return [found.get(i, f"no image {i!r} in {feature_set.uri}") for i in ids]


def _searched_splits(feature_set, request: SimilarRequest) -> list[str]:
    if request.layer not in feature_set.layers:
        raise PipelineError(f"{feature_set.uri} has no layer {request.layer!r}; it has {', '.join(feature_set.layers)}")
    unknown = [s for s in request.splits if s not in feature_set.splits]
    if unknown:
        raise PipelineError(f"{feature_set.uri} has no split {', '.join(unknown)}; it has {', '.join(feature_set.splits)}")
    return list(request.splits or feature_set.splits)


def _stored(feature_set, layer: str, splits: list[str]) -> Stored:
    blocks = [(split, feature_set.matrix(layer, split)) for split in splits]
    blocks = [(split, block) for split, block in blocks if len(block[2])]
    if not blocks:
        raise PipelineError(f"{feature_set.uri} holds no images of {', '.join(splits)} to search")
    return Stored(X=np.vstack([X for _, (X, _, _) in blocks]),
                  ids=np.concatenate([ids for _, (_, _, ids) in blocks]),
                  splits=np.concatenate([np.full(len(ids), split, dtype=object) for split, (_, _, ids) in blocks]),
                  labels=np.asarray([feature_set.classes[k] for _, (_, y, _) in blocks for k in y], dtype=object))


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
    if len(queries) > SHEET_IMAGES:
        log(f"the sheet draws the first {SHEET_IMAGES} of the {len(queries)} images searched for")
        queries = queries[:SHEET_IMAGES]
    matches = results[results["image"].isin(queries) & (results["rank"] > 0)]
    if request.ids:  # the stored images searched for are read from the sources with their matches
        images = images_by_id(feature_set, set(matches["image_id"]) | set(queries), log=log)
        keys = {name: name for name in queries}
    else:  # the files given are decoded as the set would decode them
        images = images_by_id(feature_set, set(matches["image_id"]), log=log)
        keys = {path: f"query:{path}" for path in queries}
        size = model_of(feature_set).card["preprocessing"]["input_size"]
        images.update({keys[path]: pixels for path, pixels in
                       zip(queries, decoded(queries, size, bit_depth_of(feature_set.lineage)))})
    groups = [[(keys[name], "/".join(name.rsplit("/", 2)[-2:]))]  # its folder too: a class, where the tree has one
              + [(row.image_id, f"{row.similarity:.3f} {row.label_name}")
                 for row in matches[matches["image"] == name].itertuples()] for name in queries]
    return image_sheet([(f"each image, then its {request.k} most similar stored images on {request.layer}", groups)],
                       images, per_row=RESULTS_A_ROW)
