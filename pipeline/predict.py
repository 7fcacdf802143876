"""Classify new images with a head fitted on a feature set (``tlfs predict``): each image
goes the way the set's images went (decoded by the same rule, through the same backbone
version, layers and precision, its features rounded to float16 as stored, each of the
head's views), then through the saved head. An image that cannot be decoded is a
prediction without a class, with the reason; the others are classified all the same."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.features.reader import open_set
from tlfs.features.layout import ORIGINAL
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import bit_depth_of
from tlfs.pipeline.familiarity import FAMILIAR_SHARE, Familiarity, familiarity_of
from tlfs.pipeline.image_files import (count_of, decoded_chunks, list_images, per_image, session_as_stored,
                                       view_features)
from tlfs.pipeline.saved_heads import SavedHead, default_head, load_head
from tlfs.pipeline.tables import write_table


@dataclass(frozen=True)
class PredictRequest:
    dataset: str
    backbone: str
    images: tuple[str, ...]  # image files, folders (every image below them) or globs, any fsspec URI
    head: str | None = None  # a saved head's folder under the set's _heads/ (softmax-block15); None: the sweep's
    store: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    # below this probability a prediction is not sure (for a person to check); 0: every one is
    min_probability: float = 0.0
    # also measure whether each image is like the set's training images at all (pipeline/familiarity.py)
    unfamiliar: bool = False
    neighbours: int | None = None  # None: 50, or half the smallest class's training images where fewer
    familiar_share: float = FAMILIAR_SHARE
    decode_workers: int = 0  # processes reading and decoding the images (0: one a core beside a GPU)


@dataclass(frozen=True)
class Prediction:
    image: str
    label: str | None  # the class predicted; None where the image could not be decoded
    probability: float  # the head's probability of that class
    reason: str | None = None  # why the image has no class
    sure: bool | None = None  # whether the probability reaches the request's min_probability; None without a class
    # with --unfamiliar: the cosine to the k-th most similar training image, and whether it reaches the threshold
    similarity: float | None = None
    familiar: bool | None = None

    def to_json(self) -> dict:
        return {"image": self.image, "label": self.label, "probability": self.probability, "sure": self.sure,
                "similarity": self.similarity, "familiar": self.familiar, "reason": self.reason}


PREDICTION_COLUMNS = ["image", "label", "probability", "sure", "similarity", "familiar", "reason"]


def predict(request: PredictRequest, log: Callable[[str], None] = print, show_progress: bool = False) -> list[Prediction]:
    """The head's class for each image of ``request.images``, in the order they are listed
    (``show_progress``: a progress bar on stderr)."""
    if not 0.0 <= request.min_probability <= 1.0:
        raise PipelineError(f"min_probability {request.min_probability}: a probability from 0 to 1")
    feature_set = open_set(request.dataset, request.backbone, request.store)
    head = load_head(feature_set, request.head or default_head(feature_set))
    familiarity = (familiarity_of(feature_set, head.metrics["layers"], request.neighbours, request.familiar_share,
                                  log=log) if request.unfamiliar else None)
    session, runtime, size = session_as_stored(feature_set, head.metrics["layers"], request.device, request.batch_size,
                                               log)
    paths = list_images(request.images)
    log(f"classifying {count_of(len(paths))} with {head.name} ({'+'.join(head.metrics['layers'])}, views "
        f"{'+'.join(head.metrics['views'])}) of {feature_set.uri}, on {runtime.device} ({runtime.precision})")
    started, predictions = time.perf_counter(), []
    for chunk, images in decoded_chunks(paths, size, "predict", show_progress, request.decode_workers,
                                        runtime.device, bit_depth_of(feature_set.lineage)):
        predictions += _classified(chunk, images, head, session, runtime.batch_size, request.min_probability, familiarity)
    seconds = time.perf_counter() - started
    rejected = sum(p.label is None for p in predictions)
    unfamiliar = f", {sum(p.familiar is False for p in predictions)} unfamiliar" if familiarity else ""
    log(f"classified {count_of(len(predictions) - rejected)} ({rejected} could not be decoded{unfamiliar}) in "
        f"{seconds:.1f}s ({len(predictions) / max(seconds, 1e-9):.1f} images/s)")
    return predictions


def _classified(paths: list[str], images: list[np.ndarray | str], head: SavedHead, session, batch_size: int,
                min_probability: float, familiarity: Familiarity | None) -> list[Prediction]:
    rows = per_image(images, batch_size, lambda batch: batch_scores(head, session, batch, familiarity))
    out = []
    for path, row in zip(paths, rows):
        if isinstance(row, str):
            out.append(Prediction(path, None, float("nan"), row))
            continue
        proba = row[:len(head.classes)]
        best = int(np.argmax(proba))
        similarity = None if familiarity is None else float(row[-1])
        out.append(Prediction(path, head.classes[best], float(proba[best]), sure=bool(proba[best] >= min_probability),
                              similarity=similarity,
                              familiar=None if similarity is None else bool(similarity >= familiarity.threshold)))
    return out


def batch_scores(head: SavedHead, session, batch: np.ndarray, familiarity: Familiarity | None) -> np.ndarray:
    """The head's probabilities for a uint8 batch, averaged over its views; with
    ``familiarity``, each image's similarity to the training images as one more column (its
    original view's features, which the head's views include)."""
    probabilities, original = head_scores(head, session, batch, original=familiarity is not None)
    if familiarity is None:
        return probabilities
    return np.column_stack([probabilities, familiarity.similarity(original)])


def head_scores(head: SavedHead, session, batch: np.ndarray, original: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probabilities, features)``: the head's probabilities for a uint8 batch, averaged over
    its views, and with ``original`` the original view's features of its layers as stored
    (each view run through the backbone once)."""
    features = view_features(session, batch, head.metrics["layers"],
                             [*head.metrics["views"], *([ORIGINAL] if original else [])])
    return head_probabilities(head, features), features[ORIGINAL] if original else None


def head_probabilities(head: SavedHead, features: dict[str, np.ndarray]) -> np.ndarray:
    """The head's probabilities from each of its views' features (rows of the same images),
    averaged over the views."""
    views = head.metrics["views"]
    return sum(head.predict_proba(features[view]) for view in views) / len(views)


def write_predictions(predictions: list[Prediction], uri: str) -> None:
    """Every prediction to ``uri``: a ``.csv``, ``.parquet`` or ``.jsonl`` file, local or remote."""
    import pandas as pd

    write_table(pd.DataFrame([p.to_json() for p in predictions], columns=PREDICTION_COLUMNS), uri)
