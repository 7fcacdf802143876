"""onnxruntime sessions for exported backbones, on CPU or CUDA, never silently swapped."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from models.artifact import Artifact, file_sha256
from models.errors import ModelError


@dataclass
class TapSession:
    """A loaded model: ``run(images) -> {layer: float32[n, d]}`` for the chosen layers."""

    session: object
    layers: list[str]
    device: str

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.layers, {"images": images})
        return dict(zip(self.layers, outputs))


def local_onnx(artifact: Artifact, cache_dir: str | None = None) -> Path:
    """A local copy of the artifact's ONNX file whose sha256 matches the model card.

    A file that does not match its card is refused: it was tampered with or damaged."""
    fs, path = fsspec.core.url_to_fs(artifact.onnx_uri)
    expected = artifact.card["onnx_sha256"]
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        local = Path(path)
    else:
        cache = Path(cache_dir or os.path.join(tempfile.gettempdir(), "tlfs-models"))
        cache.mkdir(parents=True, exist_ok=True)
        local = cache / f"{expected}.onnx"
        if not local.exists():
            tmp = local.with_suffix(".part")
            fs.get_file(path, str(tmp))
            tmp.replace(local)
    if not local.exists():
        raise ModelError(f"ONNX file {artifact.onnx_uri} is missing")
    actual = file_sha256(local)
    if actual != expected:
        raise ModelError(
            f"ONNX file {artifact.onnx_uri} has sha256 {actual[:16]}..., its model card says {expected[:16]}...: refusing it"
        )
    return local


def check_layers(artifact: Artifact, layers: list[str] | None) -> list[str]:
    """The chosen tap layers (all when none are given), each one the artifact has."""
    known = list(artifact.card["layers"])
    layers = layers or known
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ModelError(f"unknown layer(s) {', '.join(unknown)} for {artifact.version}; known: {', '.join(known)}")
    return layers


def cuda_available() -> bool:
    """Whether a CUDA session really starts here. onnxruntime-gpu lists its CUDA provider
    even on machines without a GPU, so a one-node model is opened to find out."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - no CUDA libraries: no CUDA
            return False
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the probe's failure is the answer, not an error to print
    try:
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CUDAExecutionProvider"])
    except Exception:  # noqa: BLE001
        return False
    return "CUDAExecutionProvider" in session.get_providers()


def open_session(artifact: Artifact, layers: list[str] | None = None, device: str = "cpu", threads: int | None = None) -> TapSession:
    import onnxruntime as ort

    layers = check_layers(artifact, layers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if device == "cuda":
        if not cuda_available():
            raise ModelError(
                "--device cuda was asked for but onnxruntime has no CUDA execution provider here "
                "(no GPU, driver or CUDA libraries); refusing to fall back to the CPU"
            )
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1"})]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ModelError(f"unknown device {device!r}: use cpu or cuda")
    session = ort.InferenceSession(str(local_onnx(artifact)), sess_options=options, providers=providers)
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ModelError("onnxruntime could not start its CUDA execution provider (see its log above)")
    return TapSession(session, layers, device)
