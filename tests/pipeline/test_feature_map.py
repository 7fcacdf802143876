"""``tlfs map``: a set's images on a plane. Classes the features tell apart come out apart on
the map, by t-SNE and by PCA; the map and each image's place are saved beside the set's
heads, with the classes' silhouette on the features themselves."""

import json

import fsspec
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_score

from tlfs.models.errors import ModelError
from tlfs.models.projection import project_2d
from tlfs.pipeline.cli import main
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.feature_map import MAP_COLUMNS, MapRequest, feature_map

QUIET = {"log": lambda *_: None}


def apart(xy: np.ndarray, labels) -> float:
    """The nearest two class centres' distance over the mean distance of a point to its class's centre."""
    labels = np.asarray(labels)
    centres = {k: xy[labels == k].mean(axis=0) for k in np.unique(labels)}
    spread = np.mean([np.linalg.norm(xy[labels == k] - c, axis=1).mean() for k, c in centres.items()])
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres.values()) for b in list(centres.values())[i + 1:]]
    return min(gaps) / spread


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_blobs_far_apart_in_many_dimensions_are_apart_on_the_plane_and_mixed_ones_are_not(method):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    centres = rng.normal(size=(3, 64)) * 4
    X = (centres[y] + rng.normal(size=(120, 64))).astype(np.float32)
    xy = project_2d(X, method)
    assert xy.shape == (120, 2) and np.isfinite(xy).all() and apart(xy, y) > 2
    assert apart(project_2d(rng.normal(size=(120, 64)).astype(np.float32), method), y) < 1  # no classes to find
    with pytest.raises(ModelError, match="unknown projection 'umap'"):
        project_2d(X, "umap")


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_a_sets_classes_come_out_apart_and_the_map_is_saved_beside_its_heads(noisy_set, method):
    feature_set, _, store = noisy_set
    points, summary = feature_map(MapRequest("noisy", "efficientnet_lite0", method=method, store=store), **QUIET)
    X, y, ids = feature_set.matrix("head", "test")
    assert list(points.columns) == MAP_COLUMNS and sorted(points["image_id"]) == sorted(ids)
    assert (points["label_name"] == points["image_id"].str.split("/").str[1]).all()  # each image's own class
    assert summary["layers"] == ["head"] and summary["images"] == len(ids) and summary["split"] == "test"
    assert apart(points[["x", "y"]].to_numpy(), points["label_name"]) > 1
    assert summary["silhouette"] == round(float(silhouette_score(X, y, metric="cosine")), 4) > 0
    saved = summary["saved_to"]
    assert saved.endswith(f"/_heads/map-{method}-head-test.png")
    with fsspec.open(saved, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    stored = pd.read_parquet(saved[:-len(".png")] + ".parquet")
    assert stored["image_id"].tolist() == points["image_id"].tolist() and np.allclose(stored["x"], points["x"])


def test_at_most_the_images_asked_are_drawn_as_many_of_each_class(noisy_set):
    _, _, store = noisy_set
    points, summary = feature_map(MapRequest("noisy", "efficientnet_lite0", ("block15",), split="train", method="pca",
                                             images=9, store=store), **QUIET)
    assert summary["images"] == 9 and points["label_name"].value_counts().to_dict() == {"red": 3, "green": 3, "blue": 3}
    assert set(points["image_id"].str.split("/").str[0]) == {"train"}
    with pytest.raises(PipelineError, match="images 2: a map needs at least 3"):
        feature_map(MapRequest("noisy", "efficientnet_lite0", images=2, store=store), **QUIET)
    with pytest.raises(PipelineError, match="has no split 'validation'"):
        feature_map(MapRequest("noisy", "efficientnet_lite0", split="validation", store=store), **QUIET)


def test_the_command_says_where_the_map_is_and_writes_each_images_place(noisy_set, tmp_path, capsys):
    _, _, store = noisy_set
    table = tmp_path / "places.csv"
    assert main(["map", "--dataset", "noisy", "--store", store, "--method", "pca", "--output", str(table)]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert out[0].startswith("36 test images on head by pca; the classes' silhouette ") and summary["saved_to"] in out[0]
    assert len(pd.read_csv(table)) == 36
