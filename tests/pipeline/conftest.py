"""Fixtures of the pipeline's tests that take a real extraction to make."""

import pytest

from tlfs import features
from tests.conftest import noisy_images, write_tree
from tests.extraction import run_extract


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory, lite0, models_root):
    """A set of noisy coloured images (12 a class and split) with the flipped view: its
    feature set, the image tree and the store; one per test module, whose heads are its own."""
    root = tmp_path_factory.mktemp("noisy")
    source = write_tree(root / "images", noisy_images())
    store = str(root / "store")
    run_extract("noisy", [str(source)], "efficientnet_lite0", store, models_root, shard_size=20, views=("flip",),
                show_progress=False, log=lambda *_: None)
    return features.open_set("noisy", "efficientnet_lite0", store=store), source, store
