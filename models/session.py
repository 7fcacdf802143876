"""The onnxruntime session of an exported backbone (:class:`TapSession`), opened on the
runtime asked for (:func:`open_session`) from its checked ONNX file (:func:`local_onnx`).

On CUDA each distinct input shape gets a fixed-shape graph (models/variants.py) with its
own device-resident input and output buffers, bound once: onnxruntime then keeps every
node on the GPU and can replay the whole graph as a CUDA graph; a short batch (a run's last:
pipeline/inference.ShardBatches runs batches on through the shards' ends) is padded to the
fixed batch. ``runtime.bound_buffers`` such sets (two on CUDA) are opened per shape, each
a session of its own (its own CUDA graph and stream) run on a thread of its own, and
:meth:`run` may be called from as many threads at once (:attr:`TapSession.concurrency`):
while the device computes one batch, the next is copied in and the last one's outputs
copied out.

Two facts of onnxruntime's CUDA provider shape this: it keeps a captured graph with the
thread that ran the capture (so a set always runs on its own thread), and it captures
with ``cudaStreamCaptureModeGlobal``, so a synchronizing CUDA call from another thread
meanwhile fails the capture (CUDA error 900, "operation not permitted when stream is
capturing"). A set is therefore opened and run through its capture (:data:`CAPTURE_RUNS`)
with the device to itself (:class:`DeviceGate`), before any batch of the run uses it.
On the CPU the same binding code runs (``fixed_shape=True`` in tests, so CI exercises
it); by default the CPU keeps one dynamic-shape graph, which ``tlfs extract`` opens as
two sessions, each on half the cores, that compute the two halves of every batch at once
(:func:`side_by_side`), the halves of two batches in flight queued for whichever is idle.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np

from tlfs.features.storage import is_local, sha256_uri
from tlfs.models.artifact import Artifact, local_cache
from tlfs.models.errors import ModelError
from tlfs.models.runtime import Runtime, available_cores, require_cuda, resolve_runtime


MAX_FIXED_SHAPES = 4  # distinct image sizes that get a graph of their own; the rest share a dynamic one
# onnxruntime's CUDA provider runs a graph twice as usual (its memory allocated), captures it on
# the third run (min_num_runs_before_cuda_graph_capture_ = 2) and replays it from the fourth
CAPTURE_RUNS = 3



class DeviceGate:
    """Runs share the device; :meth:`alone` waits for the runs under way, holds new ones
    back meanwhile (a waiting :meth:`alone` goes first), and has the device to itself."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._alone = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self):
        with self._changed:
            self._changed.wait_for(lambda: not self._alone and not self._waiting)
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self._changed:
            self._waiting += 1
            self._changed.wait_for(lambda: not self._alone and not self._running)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()



class BusyClock:
    """The wall time during which at least one call was under way (:meth:`running`); calls
    from several threads at once count once. A session's: the seconds it had a batch; and
    when its first call since :meth:`mark` began and its last one ended (``perf_counter``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._since = 0.0
        self.seconds = 0.0
        self.first_started: float | None = None
        self.last_ended: float | None = None

    def mark(self) -> None:
        """From now on :attr:`first_started` is the next call's start (a run of a warm session)."""
        with self._lock:
            self.first_started = None

    @contextlib.contextmanager
    def running(self):
        with self._lock:
            if not self._running:
                self._since = time.perf_counter()
                if self.first_started is None:
                    self.first_started = self._since
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self.last_ended = time.perf_counter()
                    self.seconds += self.last_ended - self._since



@dataclass(frozen=True)
class SessionUse:
    """What a session has spent so far: seconds with a batch (:attr:`TapSession.busy`) and
    seconds opening graphs, in all and by part. :meth:`since` gives one run's share of a
    session that served others before it (a benchmark's, a notebook's)."""

    busy: float = 0.0
    opening: float = 0.0
    opening_parts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, session) -> "SessionUse":
        """``session``'s (a :class:`TapSession`, or a stand-in with the same counters)."""
        return cls(session.busy.seconds, session.opening_seconds, dict(session.opening_parts))

    def since(self, earlier: "SessionUse") -> "SessionUse":
        parts = {name: value - earlier.opening_parts.get(name, 0.0) for name, value in self.opening_parts.items()}
        return SessionUse(self.busy - earlier.busy, self.opening - earlier.opening,
                          {name: value for name, value in parts.items() if value > 0})



@dataclass
class _Bound:
    """One graph with its input and output buffers bound on the device."""

    session: object
    binding: object
    staging: np.ndarray  # host copy of the input, padded to the fixed batch
    images: object  # OrtValue on the device
    outputs: dict = field(default_factory=dict)  # layer -> OrtValue on the device
    thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tlfs-set"))



class TapSession:
    """``run(images) -> {layer: float32[n, d]}`` for the chosen layers."""

    def __init__(self, model: Path, layers: list[str], runtime: Runtime, threads: int | None = None,
                 sessions: int = 1) -> None:
        if sessions < 1 or (sessions > 1 and runtime.fixed_shape):
            raise ModelError(f"{sessions} sessions side by side: use 1, or more only with dynamic-shape graphs"
                             " (fixed shapes have their sets of bound buffers)")
        self.model, self.layers, self.runtime, self.threads, self.sessions = model, layers, runtime, threads, sessions
        self._fixed: dict[tuple, queue.SimpleQueue[_Bound]] = {}  # per shape: its free buffer sets
        self._binding = threading.Lock()  # one thread opens a shape's sets; the others wait for them
        self._gate = DeviceGate()  # a set's opening and capture have the device alone
        self._dynamic: list | None = None  # the dynamic graph's sessions, each computing its part of a batch
        # side by side: the threads the parts of batches run on, one per session, each part on whichever session is idle
        self._parts = ThreadPoolExecutor(sessions, thread_name_prefix="tlfs-infer") if sessions > 1 else None
        self._idle_sessions: queue.SimpleQueue = queue.SimpleQueue()
        self.providers: list[str] = []
        # seconds spent opening graphs: sessions, device buffers, cuDNN's search and CUDA-graph captures
        self.opening_seconds = 0.0
        # the same by part, every set's summed: variant (the fixed-shape graph), session (onnxruntime's, with its
        # provider's setup), buffers (on the device), capture (the runs through the first set's CUDA-graph
        # capture), capture of the other sets (the same for the second set on)
        self.opening_parts: dict[str, float] = {}
        # the wall seconds :meth:`run` had a batch to compute (its graphs' openings aside)
        self.busy = BusyClock()
        if not runtime.fixed_shape:
            self._dynamic = self._timed(self._open_dynamic)
            for session in self._dynamic:
                self._idle_sessions.put(session)

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def concurrency(self) -> int:
        """How many threads may call :meth:`run` at once to some purpose: one per set of bound
        buffers; on the dynamic graph one per session side by side (the parts of two batches
        queue for whichever session is idle, so none waits for another to end its part)."""
        return self.runtime.bound_buffers if self.runtime.fixed_shape else self.sessions

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        shape = tuple(images.shape[1:])
        free = self._free_sets(shape) if self.runtime.fixed_shape else None  # a shape's sets open on its first batch
        if free is not None:
            with self.busy.running():
                bound = free.get()  # waits while every set of this shape is computing
                try:
                    parts = bound.thread.submit(self._run_batches, bound, images).result()
                finally:
                    free.put(bound)
                return {layer: np.concatenate([p[layer] for p in parts]) for layer in self.layers}
        if self._dynamic is None:
            with self._binding:
                if self._dynamic is None:  # a fifth image size: one dynamic graph for the rest, same device
                    with self._gate.alone():
                        self._dynamic = self._timed(self._open_dynamic)
        with self._gate.shared(), self.busy.running():
            if self._parts is None:
                return self._run_dynamic(self._dynamic[0], images)
            # the batch's parts at once, each on whichever session is idle first: where two threads call at
            # once (the pipeline's), their batches' parts queue one after another, so a session done with its
            # part takes the next one instead of waiting for the other session to end the batch (2 cores: idle
            # 0.6-2.0 % of an extraction's time, against 4.8-7.8 % with each session tied to its half of every
            # batch; docs/benchmarks.md). An image's features do not depend on the images beside it: the same
            # bits (tests/models/test_session.py)
            parts = np.array_split(images, max(1, min(self.sessions, len(images))))
            outputs = [future.result() for future in [self._parts.submit(self._run_on_idle, part) for part in parts]]
            if len(outputs) == 1:
                return outputs[0]
            return {layer: np.concatenate([out[layer] for out in outputs]) for layer in self.layers}

    def _run_on_idle(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """On a thread of the parts' pool (one per session): ``images`` on an idle session."""
        session = self._idle_sessions.get()
        try:
            return self._run_dynamic(session, images)
        finally:
            self._idle_sessions.put(session)

    def _free_sets(self, shape: tuple) -> "queue.SimpleQueue[_Bound] | None":
        """The queue of ``shape``'s free buffer sets, opened on its first batch; None for a
        shape beyond :data:`MAX_FIXED_SHAPES` (the dynamic graph takes it)."""
        free = self._fixed.get(shape)
        if free is None:
            with self._binding:
                free = self._fixed.get(shape)
                if free is None and len(self._fixed) < MAX_FIXED_SHAPES:
                    free = queue.SimpleQueue()
                    for bound in self._timed(lambda: [self._bind(shape, n) for n in range(self.runtime.bound_buffers)]):
                        free.put(bound)
                    self._fixed[shape] = free
        return free

    # ------------------------------------------------------------ internals
    def _timed(self, opening):
        started = time.perf_counter()
        try:
            return opening()
        finally:
            self.opening_seconds += time.perf_counter() - started

    @contextlib.contextmanager
    def _part(self, name: str):
        """Times one part of an opening into :attr:`opening_parts` (sets open one after another)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.opening_parts[name] = self.opening_parts.get(name, 0.0) + time.perf_counter() - started

    def _open_dynamic(self) -> list:
        """The dynamic graph's :attr:`sessions`, the intra-op threads shared out among them."""
        threads = self.threads if self.sessions == 1 else max(1, (self.threads or available_cores()) // self.sessions)
        return [self._open(self.model, cuda_graph=False, threads=threads) for _ in range(self.sessions)]

    def _open(self, path: Path, cuda_graph: bool, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
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
        with self._part("session"):
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if self.runtime.provider not in session.get_providers():
            raise ModelError(f"onnxruntime did not start {self.runtime.provider} for {path.name}; refusing another provider")
        self.providers = session.get_providers()
        return session

    def _bind(self, shape: tuple, number: int = 0) -> _Bound:
        """The ``number``-th set of bound buffers for ``shape`` (0: the first)."""
        from tlfs.models.variants import fixed_shape

        with self._part("variant"):
            model = fixed_shape(self.model, self.runtime.batch_size, *shape[:2])
        with self._gate.alone():  # opening allocates on the device: never during another set's capture
            session = self._open(model, cuda_graph=self.runtime.cuda_graph, threads=self.threads)
            with self._part("buffers"):
                bound = self._buffers(session, shape)
        if self.runtime.cuda_graph:
            bound.thread.submit(self._capture, bound, number).result()
        return bound

    def _buffers(self, session, shape: tuple) -> _Bound:
        """``session``'s input and output buffers for a batch of ``shape``, on its device, bound once."""
        import onnxruntime as ort

        batch = self.runtime.batch_size
        device = "cuda" if self.runtime.device == "cuda" else "cpu"
        staging = np.zeros((batch, *shape), np.uint8)
        images = ort.OrtValue.ortvalue_from_numpy(staging, device, 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input("images", images)
        outputs = {}
        for out in session.get_outputs():
            if out.name in self.layers:
                outputs[out.name] = ort.OrtValue.ortvalue_from_shape_and_type([batch, out.shape[1]], np.float32, device, 0)
                binding.bind_ortvalue_output(out.name, outputs[out.name])
        return _Bound(session, binding, staging, images, outputs)

    def _capture(self, bound: _Bound, number: int) -> None:
        """On the set's own thread, with the device alone: the runs up to the CUDA graph's capture
        (cuDNN's search runs in the first). The first set's and the others' are timed apart: what
        a second set costs to open, against what it gains by overlapping the batches."""
        with self._gate.alone(), self._part("capture" if number == 0 else "capture of the other sets"):
            for _ in range(CAPTURE_RUNS):
                bound.session.run_with_iobinding(bound.binding)

    def _run_batches(self, bound: _Bound, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """On the set's own thread: ``images`` in batches of the fixed size."""
        with self._gate.shared():
            return [self._run_bound(bound, images[i : i + self.runtime.batch_size])
                    for i in range(0, len(images), self.runtime.batch_size)]

    def _run_bound(self, bound: _Bound, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        bound.staging[:n] = images
        bound.staging[n:] = 0  # padding: its rows are computed and dropped
        bound.images.update_inplace(bound.staging)  # same device buffer: a CUDA graph replays on it
        bound.session.run_with_iobinding(bound.binding)
        # .numpy() of a CPU buffer is a view of it, which the next batch overwrites: copy
        return {layer: value.numpy()[:n].copy() for layer, value in bound.outputs.items()}

    def _run_dynamic(self, session, images: np.ndarray) -> dict[str, np.ndarray]:
        binding = session.io_binding()
        binding.bind_cpu_input("images", np.ascontiguousarray(images))
        device = "cuda" if self.runtime.device == "cuda" else "cpu"
        for layer in self.layers:
            binding.bind_output(layer, device)
        session.run_with_iobinding(binding)
        return dict(zip(self.layers, binding.copy_outputs_to_cpu()))



def local_onnx(artifact: Artifact, cache_dir: str | None = None, precision: str = "fp32") -> Path:
    """A local copy of the artifact's ONNX file (``precision``'s variant) whose sha256
    matches the model card.

    A file that does not match its card is refused: it was tampered with or damaged."""
    if precision == "fp32":
        uri, expected = artifact.onnx_uri, artifact.card["onnx_sha256"]
    else:
        variant = artifact.card.get("variants", {}).get(precision)
        if variant is None:
            how = ("`tlfs extract --precision int8` builds it" if precision == "int8" else
                   f"export it again with this version of tlfs (`tlfs export --backbone {artifact.card['backbone']}` adds it)")
            raise ModelError(f"{artifact.version} has no {precision} variant; {how}")
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



def open_session(artifact: Artifact, layers: list[str] | None = None, runtime: Runtime | None = None,
                 threads: int | None = None, sessions: int | None = None) -> TapSession:
    """A session for ``artifact``'s ``layers`` on ``runtime`` (default: fp32 on the CPU), with
    ``threads`` intra-op threads (default: onnxruntime's, one per core) shared out among
    ``sessions`` sessions of the dynamic graph (default: :func:`side_by_side`'s). ``--device cuda``
    never falls back to the CPU: without CUDA it fails, saying why."""
    runtime = runtime or resolve_runtime()
    layers = check_layers(artifact, layers)
    if runtime.device == "cuda":
        require_cuda()
    return TapSession(local_onnx(artifact, precision=runtime.precision), layers, runtime, threads,
                      sessions or side_by_side(runtime, threads))


SIDE_BY_SIDE_ON_CPU = 2


def side_by_side(runtime: Runtime, threads: int | None = None) -> int:
    """Sessions of the dynamic graph side by side, each computing its part of every batch on
    its share of the intra-op threads (``threads``, default one per core): on the CPU two,
    where there are two cores or more. Two single-threaded sessions, each taking half of every
    batch, ran Lite0 4-7 % faster than one session of two threads on 2 cores
    (docs/benchmarks.md): the cores meet once a batch, not at every operator. One elsewhere:
    on CUDA the sets of bound buffers overlap the batches."""
    if runtime.device != "cpu" or runtime.fixed_shape:
        return 1
    return max(1, min(SIDE_BY_SIDE_ON_CPU, threads or available_cores()))
