"""GPU tests run only where a CUDA session really starts. Where no GPU is present they
are skipped with the probe's reason (the one skip the suite allows). Where `nvidia-smi`
lists a GPU but CUDA does not start (a broken driver, a missing library, the CPU-only
onnxruntime), every GPU test fails with the probe's reason: a green run on a GPU machine
means the GPU paths ran."""

import shutil
import subprocess

import pytest


def gpus_seen() -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 ..."); none without the tool."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        listed = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in listed.splitlines() if line.startswith("GPU ")]


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    from tlfs.models.runtime import cuda_probe

    ok, reason = cuda_probe()
    if ok:
        return
    seen = gpus_seen()
    if seen:
        config.stash[BROKEN] = f"nvidia-smi lists {seen[0]!r} but CUDA is not usable: {reason[:400]}"
        return
    skip = pytest.mark.skip(reason=f"no GPU: CUDA is not usable here ({reason[:160]})")
    for item in gpu_items:
        item.add_marker(skip)


BROKEN = pytest.StashKey[str]()


def pytest_runtest_setup(item):
    """Before any fixture: a GPU test on a machine whose GPU CUDA cannot use fails."""
    if "gpu" in item.keywords and BROKEN in item.config.stash:
        pytest.fail(item.config.stash[BROKEN], pytrace=False)
