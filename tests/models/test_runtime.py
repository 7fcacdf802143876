import shutil

import numpy as np
import pytest

from tlfs.models.errors import ModelError
from tlfs.models.artifact import Artifact
from tlfs.models.runtime import cuda_available, cuda_probe
from tlfs.models.session import open_session
from tlfs.models.runtime import resolve_runtime


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
def test_cuda_requested_without_cuda_is_an_error_naming_the_reason_not_a_cpu_fallback(lite0):
    ok, reason = cuda_probe()
    assert not ok and reason != "ok"
    # here: the driver library is missing; the probe passes on what onnxruntime said
    assert any(k in reason for k in ("libcuda", "driver", "CUDA provider", "CUDA execution provider", "cuDNN")), reason
    with pytest.raises(ModelError, match="CUDA is not usable here: .*refusing to fall back to the CPU") as error:
        open_session(lite0, runtime=resolve_runtime("cuda"))
    assert reason in str(error.value)


def test_the_probe_model_is_readable_by_any_supported_onnxruntime():
    """Pinned to IR 8: the onnx package here writes a newer IR by default, which an older
    onnxruntime refuses; the probe must not answer "no GPU" for that reason."""
    import onnx
    import onnxruntime as ort

    from tlfs.models.runtime import probe_model

    model = probe_model()
    assert model.ir_version == 8 < onnx.helper.make_model(model.graph).ir_version
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones(1, np.float32)})[0].tolist() == [1.0]
