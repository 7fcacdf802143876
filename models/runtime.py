"""Where and how tap layers run: the device, precision and batch (:class:`Runtime`, with
each device's defaults), and whether CUDA is usable here, with the reason when it is not
(``--device cuda`` never falls back to the CPU)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from typing import Iterator

from tlfs.models.errors import ModelError


DEVICES = ("cpu", "cuda")

PRECISIONS = ("fp32", "fp16", "int8")

DEFAULT_BATCH = {"cpu": 64, "cuda": 256}

DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "fp16"}

PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

CUDNN_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")

DEFAULT_BOUND_BUFFERS = {"cpu": 1, "cuda": 2}

MAX_BOUND_BUFFERS = 4  # each set holds a graph of its own on the device: more only takes memory



def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def host_share(cores: int, device: str) -> int:
    """The threads or processes one host-side pool (decoding, writing) takes of ``cores``:
    all of them beside a GPU; where inference runs on the CPU it takes the cores itself, so
    a quarter of them (at least one)."""
    return cores if device != "cpu" else max(1, cores // 4)



@dataclass(frozen=True)
class Runtime:
    """Where and how features are computed. ``identity()`` is part of a plan's identity
    and of a feature set's lineage: one set never mixes devices or precisions."""

    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    fixed_shape: bool = False  # fixed-shape graphs with bound device buffers (default on CUDA)
    cuda_graph: bool = False  # replay each fixed-shape graph as a CUDA graph (default on CUDA)
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # once per fixed shape, so the exhaustive search pays
    # sets of bound device buffers per fixed shape, each with its own graph, run by as many
    # threads: while the device computes one batch, the next is copied in (default on CUDA: 2)
    bound_buffers: int = 1

    @property
    def provider(self) -> str:
        return PROVIDER[self.device]

    def identity(self) -> dict:
        return {"device": self.device, "provider": self.provider, "precision": self.precision}

    def to_json(self) -> dict:
        return {**asdict(self), "provider": self.provider}



def resolve_runtime(device: str = "cpu", precision: str | None = None, batch_size: int | None = None,
                    fixed_shape: bool | None = None, cuda_graph: bool | None = None,
                    cudnn_conv_algo_search: str | None = None, bound_buffers: int | None = None) -> Runtime:
    """A runtime with the device's defaults for whatever is not given: on CUDA fp16,
    batches of 256, fixed shapes, CUDA graphs and two sets of bound buffers; on the CPU
    fp32, batches of 64."""
    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}: use cpu or cuda")
    precision = precision or DEFAULT_PRECISION[device]
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "int8" and device != "cpu":
        # onnxruntime's CUDA provider has no int8 convolution: a quantized graph would run there
        # as float convolutions between quantize and dequantize steps, slower than fp16
        raise ModelError("int8 runs on the CPU (--device cpu); on cuda use fp16, its default")
    search = (cudnn_conv_algo_search or "EXHAUSTIVE").upper()
    if search not in CUDNN_SEARCH:
        raise ModelError(f"unknown cuDNN algorithm search {search!r}: use {', '.join(CUDNN_SEARCH)}")
    fixed = device == "cuda" if fixed_shape is None else fixed_shape
    graph = (device == "cuda" and fixed) if cuda_graph is None else cuda_graph
    if graph and not (device == "cuda" and fixed):
        raise ModelError("CUDA graphs need --device cuda and fixed-shape graphs")
    buffers = int(bound_buffers or (DEFAULT_BOUND_BUFFERS[device] if fixed else 1))
    if not 1 <= buffers <= MAX_BOUND_BUFFERS:
        raise ModelError(f"{buffers} sets of bound buffers: use 1 to {MAX_BOUND_BUFFERS}")
    if buffers > 1 and not fixed:
        raise ModelError(f"{buffers} sets of bound buffers need fixed-shape graphs (the default on cuda)")
    return Runtime(device, precision, int(batch_size or DEFAULT_BATCH[device]), fixed, graph, search, buffers)



_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_LOG_PREFIX = re.compile(r"^\S+ \S+ \[[EWI]:onnxruntime:[^\]]*\] ")

PROBE_IR_VERSION = 8  # read by every onnxruntime this project supports (1.14 and newer)



def probe_model():
    """A one-node model. Its IR version is pinned: a newer onnx package would otherwise
    write one the installed onnxruntime refuses, and that would read as "no GPU"."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=PROBE_IR_VERSION)



@functools.lru_cache(maxsize=1)
def cuda_probe() -> tuple[bool, str]:
    """Whether a CUDA session really starts here, and if not, why. onnxruntime-gpu lists
    its CUDA provider even on machines without a GPU, so a one-node model is opened, and
    what onnxruntime logs while it falls back is kept as the reason. Asked once per
    process (every export, plan and session asks): the answer does not change meanwhile."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} has no CUDA execution provider "
                       "(the CPU-only `onnxruntime` package is installed, not `onnxruntime-gpu`)")
    model = probe_model()
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - the reason is the answer
            return False, f"the CUDA and cuDNN libraries could not be loaded: {exc}"
    options = ort.SessionOptions()
    options.log_severity_level = 2  # warnings: why the CUDA provider did not start
    with _captured_stderr() as captured:
        try:
            session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CUDAExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            return False, f"a CUDA session does not start: {str(exc).strip().splitlines()[0]}"
    if "CUDAExecutionProvider" in session.get_providers():
        return True, "ok"
    lines = [_LOG_PREFIX.sub("", _ANSI.sub("", line)).strip() for line in captured.text.splitlines() if line.strip()]
    useful = [line for line in lines if any(k in line for k in ("CUDA", "cuda", "cudnn", "cuDNN", "driver", "libcu"))] or lines
    return False, "onnxruntime could not start its CUDA provider: " + (" | ".join(useful[-3:]) or "no reason logged")



def cuda_available() -> bool:
    return cuda_probe()[0]



class _Captured:
    text = ""  # what was written, once the capture has ended



@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """What native code writes to file descriptor 2 meanwhile (onnxruntime logs there)."""
    captured = _Captured()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")



def require_cuda() -> None:
    """``--device cuda`` without a usable GPU fails, saying why; never the CPU instead."""
    ok, reason = cuda_probe()
    if not ok:
        raise ModelError(f"--device cuda was asked for but CUDA is not usable here: {reason}; refusing to fall back to the CPU")
