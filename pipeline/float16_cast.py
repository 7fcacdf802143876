"""float32 -> float16, the features' stored type, by onnxruntime's Cast kernel.

numpy converts to float16 one value at a time (2.8 ns a value on a 2-core Skylake-X:
5.6 µs for an image's 2,048 values of EfficientNet-Lite0's taps, 28 µs for the 10,240 of
its 2x2 grid), where onnxruntime's CPU kernel uses the F16C/AVX-512 instructions (0.2 ns
a value, 0.8 µs an image with the concatenation). Both round to the nearest even, so the
bits are the same (tests/pipeline/test_float16_cast.py checks every class of value).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from tlfs.features.schema import FEATURE_DTYPE

_IR_VERSION = 9  # read by every onnxruntime this project supports
_OPSET = 17


def _cast_model() -> bytes:
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)
    graph = helper.make_graph([node], "float16_cast",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [None, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR_VERSION)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class Float16Cast:
    """``cast(matrix)``: a ``[rows, width]`` float32 matrix as float16. One per writer
    pool: its threads share it (onnxruntime's ``run`` is thread-safe and releases the
    GIL), each call running on the caller's thread alone."""

    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the writer pool is the parallelism
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(_cast_model(), options, providers=["CPUExecutionProvider"])

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.dtype != np.float32 or matrix.ndim != 2:  # not a session's output: numpy's cast, the same rounding
            return np.asarray(matrix).astype(FEATURE_DTYPE)
        return self._session.run(None, {"x": np.ascontiguousarray(matrix)})[0]
