import shutil

import numpy as np
import pytest

from models.errors import ModelError
from models.artifact import Artifact
from models.runtime import cuda_available, open_session


def test_session_returns_one_pooled_vector_per_chosen_layer(lite0):
    session = open_session(lite0, ["block7", "head"])
    out = session.run(np.zeros((3, 32, 32, 3), np.uint8))
    assert {k: v.shape for k, v in out.items()} == {"block7": (3, 80), "head": (3, 1280)}


def test_unknown_layer_is_refused(lite0):
    with pytest.raises(ModelError, match="unknown layer"):
        open_session(lite0, ["block99"])


def test_onnx_file_not_matching_its_card_is_refused(lite0, tmp_path):
    copy = tmp_path / "v"
    shutil.copytree(lite0.uri, copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 10)
    with pytest.raises(ModelError, match="refusing it"):
        open_session(Artifact(str(copy), lite0.card))


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA; the check is for machines without it")
def test_cuda_requested_without_cuda_is_an_error_not_a_cpu_fallback(lite0):
    with pytest.raises(ModelError, match="no CUDA execution provider"):
        open_session(lite0, device="cuda")
