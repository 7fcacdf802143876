"""Views: ``--views flip`` stores the features of the horizontally flipped image beside
the original's, where readers that ask for nothing never see them."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.fit import fit, sweep
from tlfs.pipeline.views import check_views
from tests.conftest import folder_images, write_tree
from tests.extraction import run_extract


def mirrored(files: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in files.items():
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, "PNG")
        out[name] = buffer.getvalue()
    return out


def run(tmp_path, name, files, models_root, **kw):
    source = write_tree(tmp_path / f"{name}-images", files)
    return run_extract("colors", [str(source)], "efficientnet_lite0", str(tmp_path / name), models_root, shard_size=7,
                       batch_size=4, show_progress=False, log=lambda *_: None, **kw)


def by_id(X, ids):
    order = np.argsort(ids)
    return X[order], ids[order]


def test_flip_view_holds_the_features_of_the_mirrored_images_and_readers_get_the_original_by_default(tmp_path, lite0, models_root):
    files = folder_images()
    both = run(tmp_path, "both", files, models_root, views=["flip"])
    plain = run(tmp_path, "plain", files, models_root)
    flipped = run(tmp_path, "flipped", mirrored(files), models_root)
    handle = features.open_set("colors", "efficientnet_lite0", store=str(tmp_path / "both"))
    assert handle.views == ["original", "flip"] and handle.manifest["rows"] == 24  # rows are images, not views
    for view, reference in (("original", "plain"), ("flip", "flipped")):
        X, ids = by_id(*handle.matrix("head", "train", view=view)[::2])
        Xr, _, idr = features.load_matrix("colors", "efficientnet_lite0", "head", "train", str(tmp_path / reference))
        Xr, idr = by_id(Xr, idr)
        assert list(ids) == list(idr)
        np.testing.assert_allclose(X, Xr, atol=2e-3, rtol=1e-2)
    default = features.load("colors", "efficientnet_lite0", "head", "train", str(tmp_path / "both"))
    assert default.equals(handle.frame("head", "train", view="original"))
    assert not np.allclose(np.stack(default["features"]), np.stack(handle.frame("head", "train", view="flip")["features"]))
    plain_reader = pd.read_parquet(f"{both['set_uri']}/layer=block7")  # an analyst's pandas: the original view only
    assert len(plain_reader) == 24
    assert both["plan_id"] != plain["plan_id"]


def test_a_set_without_the_flip_view_says_how_to_get_it(tmp_path, lite0, models_root):
    run(tmp_path, "plain", folder_images(), models_root)
    handle = features.open_set("colors", "efficientnet_lite0", store=str(tmp_path / "plain"))
    with pytest.raises(Exception, match="--views flip"):
        handle.matrix("head", "train", view="flip")
    with pytest.raises(PipelineError, match="no 'flip' view"):
        fit(handle, ["head"], "softmax", views=["flip"], log=lambda *_: None)


def test_unknown_views_are_refused_and_the_original_always_comes_first():
    assert check_views(None) == ("original",)
    assert check_views(["flip", "original", "flip"]) == ("original", "flip")
    with pytest.raises(PipelineError, match="unknown view 'rotate'.*flip"):
        check_views(["rotate"])


def test_heads_train_on_every_view_and_report_which(tmp_path, lite0, models_root):
    run(tmp_path, "both", folder_images(per_class=8), models_root, views=["flip"])
    handle = features.open_set("colors", "efficientnet_lite0", store=str(tmp_path / "both"))
    result = fit(handle, ["head"], "softmax", log=lambda *_: None)
    assert result["views"] == ["original", "flip"] and result["test_accuracy"] >= 0.9
    assert result["n_train"] + result["n_validation"] == 24  # images, whatever the views
    only = fit(handle, ["head"], "softmax", views=["original"], log=lambda *_: None)
    assert only["views"] == ["original"]
    # views named in another order are used in the set's: the original's rows validate the head
    reordered = fit(handle, ["head"], "softmax", views=["flip", "original"], log=lambda *_: None)
    assert reordered["views"] == ["original", "flip"] and reordered["validation_accuracy"] == result["validation_accuracy"]
    assert sweep(handle, log=lambda *_: None)["views"] == ["original", "flip"]
