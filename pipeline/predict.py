"""Classify new images with a head fitted on a feature set (``tlfs predict``): each image
goes the way the set's images went (decoded by the same rule, through the same backbone
version, layers and precision, its features rounded to float16 as stored, each of the
head's views), then through the saved head. An image that cannot be decoded is a
prediction without a class, with the reason; the others are classified all the same."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import fsspec
import numpy as np

from tlfs.features.reader import open_set
from tlfs.features.schema import FEATURE_DTYPE
from tlfs.features.storage import fs_path
from tlfs.models.runtime import resolve_runtime
from tlfs.models.session import open_session
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import DECODE, ImageRejected, decode
from tlfs.pipeline.lineage import model_of
from tlfs.pipeline.saved_heads import SavedHead, best_head, load_head
from tlfs.pipeline.sources.paths import an_image
from tlfs.pipeline.sources.reading import batch_reader, read_files
from tlfs.pipeline.sources.uris import expand_uri
from tlfs.pipeline.tables import write_table
from tlfs.pipeline.views import VIEWS

READ_AT_ONCE = 256  # images read and decoded together: bounds the memory held


@dataclass(frozen=True)
class PredictRequest:
    dataset: str
    backbone: str
    images: tuple[str, ...]  # image files, folders (every image below them) or globs, any fsspec URI
    head: str | None = None  # a saved head's folder under the set's _heads/ (softmax-block15); None: the sweep's
    store: str | None = None
    device: str = "cpu"
    batch_size: int | None = None


@dataclass(frozen=True)
class Prediction:
    image: str
    label: str | None  # the class predicted; None where the image could not be decoded
    probability: float  # the head's probability of that class
    reason: str | None = None  # why the image has no class

    def to_json(self) -> dict:
        return {"image": self.image, "label": self.label, "probability": self.probability, "reason": self.reason}


def predict(request: PredictRequest, log: Callable[[str], None] = print, show_progress: bool = False) -> list[Prediction]:
    """The head's class for each image of ``request.images``, in the order they are listed
    (``show_progress``: a progress bar on stderr)."""
    from tqdm import tqdm

    feature_set = open_set(request.dataset, request.backbone, request.store)
    head = load_head(feature_set, request.head or best_head(feature_set))
    artifact = model_of(feature_set)
    if feature_set.lineage.get("preprocessing", {}).get("decode") != DECODE:
        log(f"note: {feature_set.uri}'s images were decoded by another rule than this version's; "
            "predictions may differ a little from its heads' test figures")
    precision = feature_set.lineage["runtime"]["precision"]  # the features' own: fp16 ones differ in the last bits
    runtime = resolve_runtime(request.device, precision, request.batch_size)
    session = open_session(artifact, head.metrics["layers"], runtime)
    paths = list_images(request.images)
    log(f"classifying {_images(len(paths))} with {head.name} ({'+'.join(head.metrics['layers'])}, views "
        f"{'+'.join(head.metrics['views'])}) of {feature_set.uri}, on {runtime.device} ({runtime.precision})")
    started, predictions = time.perf_counter(), []
    size = artifact.card["preprocessing"]["input_size"]
    with tqdm(total=len(paths), unit="img", desc="predict", disable=not show_progress, mininterval=1.0) as bar:
        for start in range(0, len(paths), READ_AT_ONCE):
            chunk = paths[start:start + READ_AT_ONCE]
            predictions += _classified(chunk, _decoded(chunk, size), head, session, runtime.batch_size)
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    rejected = sum(p.label is None for p in predictions)
    log(f"classified {_images(len(predictions) - rejected)} ({rejected} could not be decoded) in {seconds:.1f}s "
        f"({len(predictions) / max(seconds, 1e-9):.1f} images/s)")
    return predictions


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def list_images(uris: tuple[str, ...] | list[str]) -> list[str]:
    """Every image file the URIs name: files as they are, folders searched below and globs
    expanded (hidden files and folders, and files that are not images, left out); in the
    order given, each folder sorted."""
    found: list[str] = []
    for uri in uris:
        pattern = any(c in uri for c in "*?[{")
        for name in expand_uri(uri):
            fs, path = fsspec.core.url_to_fs(name)
            if fs.isdir(path):  # each image named below the folder as it was given (relative, or with its protocol)
                below = sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))
                found += [f"{name.rstrip('/')}/{relative}" for relative in below if an_image(relative)]
            elif fs.exists(path):
                if not pattern or an_image(path.rsplit("/", 1)[-1]):
                    found.append(name)
            else:
                raise PipelineError(f"{name}: no such file or folder")
    if not found:
        raise PipelineError(f"no image files in {', '.join(uris)}")
    return found


def _decoded(paths: list[str], input_size: int) -> Iterator[np.ndarray | str]:
    """Each image's pixels, or the reason it has none."""
    payloads = _read(paths)
    for path in paths:
        try:
            yield decode(payloads[path], input_size)
        except ImageRejected as exc:
            yield str(exc)


def _read(paths: list[str]) -> dict[str, object]:
    """Each file's bytes, or why it could not be read
    (:class:`~tlfs.pipeline.image_decode.Unreadable`), those of one filesystem read together
    as a folder source reads its batches."""
    by_fs: dict[str, list[str]] = {}
    for uri in paths:
        by_fs.setdefault(uri.split("://", 1)[0] if "://" in uri else "file", []).append(uri)
    payloads: dict[str, object] = {}
    for uris in by_fs.values():
        fs, _ = batch_reader(uris[0])
        payloads.update(zip(uris, read_files(fs, [fs_path(uri)[1] for uri in uris])))
    return payloads


def _classified(paths: list[str], decoded: Iterator[np.ndarray | str], head: SavedHead, session,
                batch_size: int) -> list[Prediction]:
    images = list(decoded)
    proba: dict[int, np.ndarray] = {}
    by_shape: dict[tuple, list[int]] = {}
    for number, image in enumerate(images):
        if not isinstance(image, str):
            by_shape.setdefault(image.shape, []).append(number)
    for numbers in by_shape.values():  # a batch holds images of one size (small ones are resized in the graph)
        for start in range(0, len(numbers), batch_size):
            batch_numbers = numbers[start:start + batch_size]
            batch = np.stack([images[n] for n in batch_numbers])
            proba.update(zip(batch_numbers, batch_probabilities(head, session, batch)))
    out = []
    for number, path in enumerate(paths):
        if number not in proba:
            out.append(Prediction(path, None, float("nan"), images[number]))
            continue
        best = int(np.argmax(proba[number]))
        out.append(Prediction(path, head.classes[best], float(proba[number][best])))
    return out


def batch_probabilities(head: SavedHead, session, batch: np.ndarray) -> np.ndarray:
    """The head's probabilities for a uint8 batch, averaged over its views."""
    views = head.metrics["views"]
    return sum(head.predict_proba(head_features(session, VIEWS[view](batch), head.metrics["layers"]))
               for view in views) / len(views)


def head_features(session, batch: np.ndarray, layers: list[str]) -> np.ndarray:
    """The head's input for a batch: its layers side by side, rounded to float16 as the set
    stores them."""
    outputs = session.run(batch)
    return np.hstack([outputs[layer].astype(FEATURE_DTYPE).astype(np.float32) for layer in layers])


def write_predictions(predictions: list[Prediction], uri: str) -> None:
    """Every prediction to ``uri``: a ``.csv``, ``.parquet`` or ``.jsonl`` file, local or remote."""
    import pandas as pd

    write_table(pd.DataFrame([p.to_json() for p in predictions], columns=["image", "label", "probability", "reason"]), uri)
