"""GPU tests run only where a CUDA session really starts; elsewhere they are skipped
with the probe's reason (a skip the suite allows: no GPU)."""

import pytest


def pytest_collection_modifyitems(config, items):
    from tlfs.models.runtime import cuda_probe

    ok, reason = cuda_probe()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no GPU: CUDA is not usable here ({reason[:160]})")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
