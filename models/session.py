"""Running tap layers: where and how (:class:`Runtime`), and the session that does it
(:class:`TapSession`), with inputs and outputs bound to buffers on the device.

On CUDA each distinct input shape gets a fixed-shape graph (models/variants.py) with its
own device-resident input and output buffers, bound once: onnxruntime then keeps every
node on the GPU and can replay the whole graph as a CUDA graph; the last, short batch is
padded to the fixed batch. On the CPU the same binding code runs (``fixed_shape=True``
in tests, so CI exercises it); by default the CPU keeps one dynamic-shape graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlfs.models.errors import ModelError

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
DEFAULT_BATCH = {"cpu": 64, "cuda": 256}
DEFAULT_PRECISION = {"cpu": "fp32", "cuda": "fp16"}
PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDNN_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
MAX_FIXED_SHAPES = 4  # distinct image sizes that get a graph of their own; the rest share a dynamic one


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

    @property
    def provider(self) -> str:
        return PROVIDER[self.device]

    def identity(self) -> dict:
        return {"device": self.device, "provider": self.provider, "precision": self.precision}

    def to_json(self) -> dict:
        return {**asdict(self), "provider": self.provider}


def resolve_runtime(device: str = "cpu", precision: str | None = None, batch_size: int | None = None,
                    fixed_shape: bool | None = None, cuda_graph: bool | None = None,
                    cudnn_conv_algo_search: str | None = None) -> Runtime:
    """A runtime with the device's defaults for whatever is not given: on CUDA fp16,
    batches of 256, fixed shapes and CUDA graphs; on the CPU fp32, batches of 64."""
    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}: use cpu or cuda")
    precision = precision or DEFAULT_PRECISION[device]
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    search = (cudnn_conv_algo_search or "EXHAUSTIVE").upper()
    if search not in CUDNN_SEARCH:
        raise ModelError(f"unknown cuDNN algorithm search {search!r}: use {', '.join(CUDNN_SEARCH)}")
    fixed = device == "cuda" if fixed_shape is None else fixed_shape
    graph = (device == "cuda" and fixed) if cuda_graph is None else cuda_graph
    if graph and not (device == "cuda" and fixed):
        raise ModelError("CUDA graphs need --device cuda and fixed-shape graphs")
    return Runtime(device, precision, int(batch_size or DEFAULT_BATCH[device]), fixed, graph, search)


@dataclass
class _Bound:
    """One graph with its input and output buffers bound on the device."""

    session: object
    binding: object
    staging: np.ndarray  # host copy of the input, padded to the fixed batch
    images: object  # OrtValue on the device
    outputs: dict = field(default_factory=dict)  # layer -> OrtValue on the device


class TapSession:
    """``run(images) -> {layer: float32[n, d]}`` for the chosen layers."""

    def __init__(self, model: Path, layers: list[str], runtime: Runtime, threads: int | None = None) -> None:
        self.model, self.layers, self.runtime, self.threads = model, layers, runtime, threads
        self._fixed: dict[tuple, _Bound] = {}
        self._dynamic = None
        self.providers: list[str] = []
        if not runtime.fixed_shape:
            self._dynamic = self._open(model, cuda_graph=False)

    @property
    def device(self) -> str:
        return self.runtime.device

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        shape = tuple(images.shape[1:])
        if self.runtime.fixed_shape and (shape in self._fixed or len(self._fixed) < MAX_FIXED_SHAPES):
            bound = self._fixed.get(shape) or self._bind(shape)
            parts = [self._run_bound(bound, images[i : i + self.runtime.batch_size])
                     for i in range(0, len(images), self.runtime.batch_size)]
            return {layer: np.concatenate([p[layer] for p in parts]) for layer in self.layers}
        if self._dynamic is None:  # a fifth image size: one dynamic graph for the rest, same device
            self._dynamic = self._open(self.model, cuda_graph=False)
        return self._run_dynamic(images)

    # ------------------------------------------------------------ internals
    def _open(self, path: Path, cuda_graph: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.runtime.device == "cpu":
            # idle compute threads sleep instead of spinning: the spin takes the cores that
            # reading, decoding and Parquet writing need between batches (bench: pipeline
            # 0.94x -> 0.98x of onnxruntime alone, median of paired runs, 2 cores)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if self.runtime.device == "cuda":
            provider_options = {"prefer_nhwc": "1", "cudnn_conv_algo_search": self.runtime.cudnn_conv_algo_search,
                                "enable_cuda_graph": "1" if cuda_graph else "0"}
            providers = [("CUDAExecutionProvider", provider_options)]
        else:
            providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if self.runtime.provider not in session.get_providers():
            raise ModelError(f"onnxruntime did not start {self.runtime.provider} for {path.name}; refusing another provider")
        self.providers = session.get_providers()
        return session

    def _bind(self, shape: tuple) -> _Bound:
        import onnxruntime as ort

        from tlfs.models.variants import fixed_shape

        batch = self.runtime.batch_size
        device = "cuda" if self.runtime.device == "cuda" else "cpu"
        session = self._open(fixed_shape(self.model, batch, *shape[:2]), cuda_graph=self.runtime.cuda_graph)
        staging = np.zeros((batch, *shape), np.uint8)
        images = ort.OrtValue.ortvalue_from_numpy(staging, device, 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input("images", images)
        outputs = {}
        for out in session.get_outputs():
            if out.name in self.layers:
                outputs[out.name] = ort.OrtValue.ortvalue_from_shape_and_type([batch, out.shape[1]], np.float32, device, 0)
                binding.bind_ortvalue_output(out.name, outputs[out.name])
        bound = _Bound(session, binding, staging, images, outputs)
        self._fixed[shape] = bound
        return bound

    def _run_bound(self, bound: _Bound, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        bound.staging[:n] = images
        bound.staging[n:] = 0  # padding: its rows are computed and dropped
        bound.images.update_inplace(bound.staging)  # same device buffer: a CUDA graph replays on it
        bound.session.run_with_iobinding(bound.binding)
        # .numpy() of a CPU buffer is a view of it, which the next batch overwrites: copy
        return {layer: value.numpy()[:n].copy() for layer, value in bound.outputs.items()}

    def _run_dynamic(self, images: np.ndarray) -> dict[str, np.ndarray]:
        binding = self._dynamic.io_binding()
        binding.bind_cpu_input("images", np.ascontiguousarray(images))
        device = "cuda" if self.runtime.device == "cuda" else "cpu"
        for layer in self.layers:
            binding.bind_output(layer, device)
        self._dynamic.run_with_iobinding(binding)
        return dict(zip(self.layers, binding.copy_outputs_to_cpu()))
