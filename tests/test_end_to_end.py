"""Real weights, real CIFAR-10: export -> extract -> load in pandas -> fit softmax."""

import pytest

from tlfs import features
from tlfs.pipeline.fit import fit
from tests.conftest import shared_cifar_sources
from tests.extraction import run_extract


@pytest.mark.slow
def test_cifar10_sample_end_to_end_well_above_chance(tmp_path, lite0, models_root):
    sources = shared_cifar_sources()
    store = str(tmp_path / "store")
    summary = run_extract("cifar10", sources, "efficientnet_lite0", store, models_root, limit=300,
                          layers=["block15", "head"], show_progress=False, log=lambda *_: None)
    assert summary["counts"] == {"test": {"read": 300, "written": 300, "rejected": 0}, "train": {"read": 300, "written": 300, "rejected": 0}}
    frame = features.load("cifar10", "efficientnet_lite0", "block15", "test", store)
    assert frame["label_name"].value_counts().to_dict() == {name: 30 for name in frame["label_name"].unique()}
    result = fit(features.open_set("cifar10", "efficientnet_lite0", store=store), ["block15"], "softmax", log=lambda *_: None)
    assert result["test_accuracy"] > 0.5  # chance is 0.1; the full-data probe reaches ~0.8
