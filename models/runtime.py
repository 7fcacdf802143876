"""onnxruntime sessions for exported backbones, on CPU or CUDA, never silently swapped:
finding the checked ONNX file, probing CUDA (with the reason when it cannot start),
opening a :class:`~models.session.TapSession`."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import fsspec

from tlfs.features.storage import is_local, sha256_uri
from tlfs.models.artifact import Artifact, local_cache
from tlfs.models.errors import ModelError
from tlfs.models.session import Runtime, TapSession, resolve_runtime


def local_onnx(artifact: Artifact, cache_dir: str | None = None, precision: str = "fp32") -> Path:
    """A local copy of the artifact's ONNX file (``precision``'s variant) whose sha256
    matches the model card.

    A file that does not match its card is refused: it was tampered with or damaged."""
    if precision == "fp32":
        uri, expected = artifact.onnx_uri, artifact.card["onnx_sha256"]
    else:
        variant = artifact.card.get("variants", {}).get(precision)
        if variant is None:
            raise ModelError(f"{artifact.version} has no {precision} variant; export it again with this version of tlfs "
                             f"(`tlfs export --backbone {artifact.card['backbone']}` adds it)")
        uri, expected = f"{artifact.uri}/{variant['file']}", variant["sha256"]
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        local = Path(path)
    else:
        local = local_cache(cache_dir) / f"{expected}.onnx"
        if not local.exists():
            tmp = local.with_suffix(".part")
            fs.get_file(path, str(tmp))
            tmp.replace(local)
    if not local.exists():
        raise ModelError(f"ONNX file {uri} is missing")
    actual = sha256_uri(local)
    if actual != expected:
        raise ModelError(
            f"ONNX file {uri} has sha256 {actual[:16]}..., its model card says {expected[:16]}...: refusing it"
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


def open_session(artifact: Artifact, layers: list[str] | None = None, runtime: Runtime | None = None,
                 threads: int | None = None) -> TapSession:
    """A session for ``artifact``'s ``layers`` on ``runtime`` (default: fp32 on the CPU).
    ``--device cuda`` never falls back to the CPU: without CUDA it fails, saying why."""
    runtime = runtime or resolve_runtime()
    layers = check_layers(artifact, layers)
    if runtime.device == "cuda":
        require_cuda()
    return TapSession(local_onnx(artifact, precision=runtime.precision), layers, runtime, threads)
