"""A set's images on a plane (``tlfs map``): one layer's stored features of a class-balanced
sample of a split, projected to two dimensions (t-SNE or PCA, models/projection.py) and drawn
one colour a class. Classes the layer tells apart come out as islands; a class spread over
the others, or an image among another class's, is worth a look. With the map, the
silhouette of the classes on the features themselves (cosine; from -1 to 1, higher is
better separated) puts a number on what the map shows."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

MAP_COLUMNS = ["image_id", "label_name", "x", "y"]
DEFAULT_IMAGES = 2000  # drawn, class-balanced: t-SNE's time grows faster than the images
SILHOUETTE_IMAGES = 5000  # at most, for the silhouette: its distances grow with the square of the images


@dataclass(frozen=True)
class MapRequest:
    dataset: str
    backbone: str
    layers: tuple[str, ...] = ()  # one layer or several side by side; (): the sweep's best layer, or the deepest
    split: str = "test"
    method: str = "tsne"  # models/projection.METHODS
    images: int = DEFAULT_IMAGES  # at most, as many of each class
    store: str | None = None
    version: int | None = None


def feature_map(request: MapRequest, log: Callable[[str], None] = print):
    """``(points, summary)``: a pandas frame of ``MAP_COLUMNS``, one row an image drawn, and
    what it comes to (the silhouette, where the map was saved beside the set's heads)."""
    import pandas as pd
    from sklearn.metrics import silhouette_score

    from tlfs.features import layout
    from tlfs.features.reader import open_set
    from tlfs.models.projection import project_2d
    from tlfs.pipeline.advise import balanced_sample
    from tlfs.pipeline.fit import publish_files
    from tlfs.pipeline.saved_heads import layers_to_use, split_to_use

    if request.images < 3:
        raise PipelineError(f"images {request.images}: a map needs at least 3")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    layers = layers_to_use(feature_set, request.layers)
    split_to_use(feature_set, request.split)
    X, y, ids = feature_set.matrices(layers, request.split)
    rows = balanced_sample(y, ids, request.images)
    X, y, ids = X[rows], y[rows], ids[rows]
    started = time.perf_counter()
    log(f"drawing {len(rows)} {request.split} images of {feature_set.uri} on {'+'.join(layers)} ({X.shape[1]} values "
        f"each) by {request.method}")
    xy = project_2d(X, request.method)
    names = np.asarray(feature_set.classes, dtype=object)
    points = pd.DataFrame({"image_id": ids, "label_name": names[y], "x": xy[:, 0], "y": xy[:, 1]}, columns=MAP_COLUMNS)
    separated = len(np.unique(y)) > 1
    silhouette = (round(float(silhouette_score(X, y, metric="cosine", sample_size=min(len(y), SILHOUETTE_IMAGES),
                                               random_state=0)), 4) if separated else None)
    name = f"map-{request.method}-{'+'.join(layers)}-{request.split}"
    title = (f"{feature_set.dataset}: {len(rows)} {request.split} images on {'+'.join(layers)} by {request.method} "
             f"({feature_set.backbone_version})" + (f"; silhouette {silhouette:.3f}" if separated else ""))
    with tempfile.TemporaryDirectory(prefix="tlfs-map-") as tmp:
        folder = Path(tmp)
        points.to_parquet(folder / f"{name}.parquet", index=False)
        publish_files([folder / f"{name}.parquet", map_png(folder / f"{name}.png", points, list(feature_set.classes), title)],
                      layout.heads_uri(feature_set.uri))
    summary = {"feature_set": feature_set.uri, "version": feature_set.version, "layers": layers, "split": request.split,
               "method": request.method, "images": int(len(rows)), "silhouette": silhouette,
               "seconds": round(time.perf_counter() - started, 1),
               "saved_to": f"{layout.heads_uri(feature_set.uri)}/{name}.png"}
    return points, summary


def map_png(path: Path, points, classes: list[str], title: str) -> Path:
    """The points one colour a class (in the set's class order), with a legend beside them."""
    from matplotlib import colormaps

    from tlfs.pipeline.plotting import saved_figure

    colours = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    with saved_figure(path, (7.5, 6.0)) as (fig, ax):
        for number, name in enumerate(classes):
            shown = points[points["label_name"] == name]
            if len(shown):
                ax.scatter(shown["x"], shown["y"], s=5, alpha=0.7, color=colours(number % colours.N), label=name,
                           linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
        if len(classes) <= 40:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=3, frameon=False)
    return path
