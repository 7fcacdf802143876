"""An exported graph quantized to int8 for the CPU: onnxruntime's static quantization
(``quantize_static``), QDQ format, weights int8 per output channel, activations uint8,
ranges taken by min-max over calibration images. onnxruntime then fuses each
quantize-conv-dequantize into one ``QLinearConv``, which runs on the CPU's integer dot
products (VNNI where it has them).

The graph's preprocessing (its input's transpose and cast, the resize, the normalisation:
every node before the first weighted one) stays in float: quantized, those steps on a
full-size image cost more than they save, and they would round the pixels before the first
convolution sees them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

QUANTIZER = ("onnxruntime quantize_static: QDQ, weights int8 per channel, activations uint8, min-max calibration; "
             "the preprocessing before the first weighted node kept in float")


def saturation_notice(cpu_flags: set[str] | None = None) -> str | None:
    """A line for an x86 CPU without VNNI, None elsewhere: there onnxruntime multiplies
    uint8 by int8 with an instruction whose 16-bit sums can saturate (VNNI's do not), so
    the features may come out coarser than where the graph was checked. ``cpu_flags``:
    /proc/cpuinfo's (read where not given; None where there is no such file)."""
    import platform

    if cpu_flags is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        try:
            with open("/proc/cpuinfo") as info:
                cpu_flags = next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
        except OSError:
            return None
    if cpu_flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return None
    return ("this CPU has no VNNI: onnxruntime's int8 products can saturate on it, so int8 features may be coarser "
            "here than where the graph was checked; compare a head on them with fp32's before relying on them")


def preprocessing_nodes(model) -> list[str]:
    """The names of the nodes that no weighted node precedes: those that compute only
    from the graph's input and constants (the layout, cast, resize and normalisation)."""
    after_weights: set[str] = set()
    before: list[str] = []
    for node in model.graph.node:  # an ONNX graph's nodes are in topological order
        if node.op_type in WEIGHTED_OPS or any(name in after_weights for name in node.input):
            after_weights.update(node.output)
        elif node.name:  # the quantizer excludes nodes by name: an unnamed one's "" would exclude every unnamed node
            before.append(node.name)
    return before


class _Batches:
    """onnxruntime's calibration reader over ``batches``; with ``CalibStridedMinMax`` it
    is read one batch at a time (``set_range``), so that the calibration holds one
    batch's activations at once rather than every batch's."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str):
        self.batches, self.input_name = list(batches), input_name
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict | None:
        batch = next(self._next, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch)}


def to_int8(fp32_path: Path, out_path: Path, batches: Sequence[np.ndarray], input_name: str = "images") -> None:
    """Quantize ``fp32_path`` into ``out_path``, its activations' ranges taken on ``batches``."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tlfs-int8-") as tmp:
        # shapes inferred and the graph folded first (onnxruntime's advice): the quantizer
        # needs each tensor's shape, and folded shape arithmetic leaves nothing to quantize there
        prepared = Path(tmp) / "prepared.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))  # it logs its advice to re-run pre-processing
        try:
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(
                str(prepared), str(out_path), _Batches(batches, input_name),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=preprocessing_nodes(onnx.load(str(prepared))),
                extra_options={"CalibStridedMinMax": 1})
        finally:
            logging.getLogger().setLevel(quiet)
    model = onnx.load(str(out_path))
    _only_used_opsets(model)
    onnx.save(model, str(out_path))


def _only_used_opsets(model) -> None:
    """Drop the operator sets no node uses: the pre-processing declares every domain
    onnxruntime knows, and a graph declaring a domain at another version than a graph
    merged with it (a shipped classifier's head) cannot be merged."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
