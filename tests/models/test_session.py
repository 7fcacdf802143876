"""The GPU path's logic, checked on the CPU: device defaults, the fp16 variant's numerics,
fixed-shape graphs with bound buffers and a padded last batch, and that the fixed graph
leaves no Shape node behind (what kept the in-graph resize off the GPU)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tlfs.models.errors import ModelError
from tlfs.models.session import BusyClock, local_onnx, open_session, side_by_side
from tlfs.models.runtime import available_cores, resolve_runtime
from tlfs.models.variants import FP16_MIN_COSINE, fixed_shape, min_cosine


def test_each_device_gets_its_own_defaults():
    cpu, cuda = resolve_runtime("cpu"), resolve_runtime("cuda")
    assert (cpu.precision, cpu.batch_size, cpu.fixed_shape, cpu.cuda_graph) == ("fp32", 64, False, False)
    assert (cuda.precision, cuda.batch_size, cuda.fixed_shape, cuda.cuda_graph) == ("fp16", 256, True, True)
    assert (cpu.bound_buffers, cuda.bound_buffers) == (1, 2)  # on CUDA one batch is copied in while another computes
    assert resolve_runtime("cpu", fixed_shape=True).bound_buffers == 1
    assert cuda.identity() == {"device": "cuda", "provider": "CUDAExecutionProvider", "precision": "fp16"}
    assert resolve_runtime("cuda", "fp32", 512).batch_size == 512


@pytest.mark.parametrize("bad, match", [({"device": "tpu"}, "unknown device"), ({"precision": "int4"}, "unknown precision"),
                                        ({"device": "cuda", "precision": "int8"}, "int8 runs on the CPU"),
                                        ({"cuda_graph": True}, "CUDA graphs need"),
                                        ({"cudnn_conv_algo_search": "fast"}, "cuDNN algorithm search"),
                                        ({"bound_buffers": 2}, "need fixed-shape graphs"),
                                        ({"bound_buffers": 5, "fixed_shape": True}, "use 1 to 4")])
def test_impossible_runtimes_are_refused(bad, match):
    with pytest.raises(ModelError, match=match):
        resolve_runtime(**{"device": "cpu", **bad})


def test_export_records_an_fp16_variant_with_its_parity(lite0):
    variant = lite0.card["variants"]["fp16"]
    assert variant["file"] == "model.fp16.onnx" and "keep_io_types" in variant["converter"]
    assert set(variant["parity_vs_fp32_cpu"]) == set(lite0.card["layers"])
    path = local_onnx(lite0, precision="fp16")  # checked against the card's sha256
    assert path.name == "model.fp16.onnx"


def test_fp16_features_agree_with_fp32_and_with_pytorch_in_half_precision(lite0):
    """The fp16 graph (onnxruntime's CPU provider runs it) against the fp32 graph, and
    against PyTorch computing in fp16 on the CPU: a reference made independently here."""
    import torch

    from tlfs.models import sample_images
    from tlfs.models.backbones import load_backbone
    from tlfs.models.taps import TapNetwork

    images = np.stack([sample_images.resized(sample_images.photo(n), 32) for n in sample_images.PHOTOS])
    layers = ["block7", "block15", "head"]
    fp32 = open_session(lite0, layers).run(images)
    fp16 = open_session(lite0, layers, resolve_runtime("cpu", "fp16")).run(images)
    loaded = load_backbone("efficientnet_lite0")
    network = TapNetwork(loaded.spec, loaded.module).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        half = dict(zip(network.tap_names, (t.float().numpy() for t in network(torch.from_numpy(images)))))
    for layer in layers:
        assert fp16[layer].dtype == np.float32  # keep_io_types: float32 features out
        assert min_cosine(fp16[layer], fp32[layer]) >= FP16_MIN_COSINE, layer
        assert min_cosine(half[layer], fp32[layer]) >= 0.99, layer  # the reference itself is sane
        assert min_cosine(fp16[layer], half[layer]) >= 0.99, layer
        assert not np.array_equal(fp16[layer], fp32[layer]), "the fp16 graph computed exactly fp32"


def test_fixed_shape_graph_with_bound_buffers_equals_the_dynamic_one(lite0):
    """The binding code that runs on CUDA (fixed batch, device buffers updated in place,
    the last batch padded) gives the dynamic session's features, here on the CPU."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (11, 32, 32, 3), dtype=np.uint8)
    dynamic = open_session(lite0, ["block4", "head"]).run(images)
    fixed = open_session(lite0, ["block4", "head"], resolve_runtime("cpu", batch_size=4, fixed_shape=True))
    got = fixed.run(images)  # 4 + 4 + 3 (padded to 4)
    again = fixed.run(images[:5])  # the same buffers, reused
    for layer in ("block4", "head"):
        assert got[layer].shape == dynamic[layer].shape
        np.testing.assert_allclose(got[layer], dynamic[layer], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(again[layer], dynamic[layer][:5], rtol=1e-4, atol=1e-4)
    assert len(fixed._fixed) == 1


def test_two_sets_of_bound_buffers_run_from_two_threads_at_once_and_give_the_same_features(lite0):
    """CUDA's default: two buffer sets per shape, each a session of its own, used by two
    threads at once (the inference threads); every batch's features must be its own."""
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for _ in range(8)]
    dynamic = open_session(lite0, ["head"])
    expected = [dynamic.run(b)["head"] for b in batches]
    session = open_session(lite0, ["head"], resolve_runtime("cpu", batch_size=4, fixed_shape=True, bound_buffers=2),
                           threads=1)
    assert session.concurrency == 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda b: session.run(b)["head"], batches))
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)
    sets = [session._fixed[(32, 32, 3)].get() for _ in range(2)]
    assert sets[0].session is not sets[1].session and sets[0].images is not sets[1].images
    assert session._fixed[(32, 32, 3)].empty() and len(session._fixed) == 1  # two sets, no more


def test_a_session_says_where_its_opening_went_part_by_part(lite0):
    """Opening a shape's sets: its fixed-shape graph, each set's onnxruntime session and device
    buffers; on CUDA also each set's runs through its capture, which the CPU does not make."""
    session = open_session(lite0, ["head"], resolve_runtime("cpu", batch_size=2, fixed_shape=True, bound_buffers=2),
                           threads=1)
    assert session.opening_parts == {}  # nothing opened before the first batch of a shape
    session.run(np.zeros((2, 32, 32, 3), np.uint8))
    parts = session.opening_parts
    assert set(parts) == {"variant", "session", "buffers"}
    assert all(seconds > 0 for seconds in parts.values())
    assert sum(parts.values()) <= session.opening_seconds  # parts of the whole, the whole timed around them
    session.run(np.zeros((2, 32, 32, 3), np.uint8))
    assert session.opening_parts == parts  # a shape opens once


def test_sessions_side_by_side_each_compute_a_part_of_every_batch_on_their_share_of_the_threads_and_give_the_same_bits(
        lite0):
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8) for n in (8, 7, 1)]  # even, odd, a single image
    single = open_session(lite0, ["head", "block4"], threads=2, sessions=1)
    session = open_session(lite0, ["head", "block4"], threads=2, sessions=2)
    assert session.concurrency == 2  # two callers at once: their batches' parts queue for the idle session
    for batch in batches:
        want, have = single.run(batch), session.run(batch)
        for layer in want:  # an image's features do not depend on the images beside it
            assert have[layer].shape == want[layer].shape
            assert np.array_equal(have[layer].view(np.uint32), want[layer].view(np.uint32))
    assert len(session._dynamic) == 2 and session._dynamic[0] is not session._dynamic[1]
    assert [s.get_session_options().intra_op_num_threads for s in session._dynamic] == [1, 1]  # two threads shared out


def test_sessions_side_by_side_called_from_two_threads_at_once_give_each_batch_its_own_features(lite0):
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8) for n in (8, 7, 1, 6, 5, 8)]
    single = open_session(lite0, ["head"], threads=2, sessions=1)
    session = open_session(lite0, ["head"], threads=2, sessions=2)
    with ThreadPoolExecutor(max_workers=session.concurrency) as pool:
        got = list(pool.map(lambda b: session.run(b)["head"], batches))
    for batch, have in zip(batches, got):
        assert np.array_equal(have.view(np.uint32), single.run(batch)["head"].view(np.uint32))


def test_a_session_side_by_side_done_with_its_part_takes_the_next_part_instead_of_waiting_for_the_batch(lite0):
    """Two callers at once, one session held up on its part of a batch: the other session
    runs the three other parts of both batches meanwhile (sessions tied each to its half of
    every batch would leave it idle until the held part ended: the cores' idle time on 2 cores)."""
    session = open_session(lite0, ["head"], threads=2, sessions=2)
    held, original = session._dynamic[0], session._run_dynamic
    others_done, released = [], threading.Event()

    def run_dynamic(onnx_session, images):
        if onnx_session is held:
            released.wait(timeout=30)
        out = original(onnx_session, images)
        if onnx_session is not held:
            others_done.append(len(images))
            if len(others_done) == 3:
                released.set()
        return out

    session._run_dynamic = run_dynamic
    batches = [np.full((2, 32, 32, 3), n, np.uint8) for n in (10, 200)]  # two parts each
    with ThreadPoolExecutor(max_workers=2) as pool:
        outputs = list(pool.map(session.run, batches))
    assert released.is_set() and others_done == [1, 1, 1]  # released by the other session's three parts, not a timeout
    assert [out["head"].shape for out in outputs] == [(2, 1280), (2, 1280)]
    assert np.array_equal(outputs[0]["head"][0], outputs[0]["head"][1])  # each batch's own images, in order
    assert not np.array_equal(outputs[0]["head"][0], outputs[1]["head"][0])


def test_the_pipeline_opens_two_sessions_side_by_side_on_a_cpu_of_two_cores_or_more_and_one_elsewhere():
    cpu = resolve_runtime("cpu")
    assert side_by_side(cpu) == min(2, available_cores())
    assert side_by_side(cpu, threads=1) == 1 and side_by_side(cpu, threads=8) == 2
    assert side_by_side(resolve_runtime("cpu", fixed_shape=True)) == 1  # its sets of bound buffers instead
    assert side_by_side(resolve_runtime("cuda")) == 1


def test_sessions_side_by_side_need_the_dynamic_graph(lite0):
    with pytest.raises(ModelError, match="sessions side by side"):
        open_session(lite0, ["head"], resolve_runtime("cpu", fixed_shape=True), sessions=2)


def test_the_busy_clock_counts_the_time_any_call_is_under_way_once_however_many_overlap():
    clock = BusyClock()
    entered, leave = threading.Event(), threading.Event()

    def other_call():
        with clock.running():
            entered.set()
            leave.wait()

    started = time.perf_counter()
    with clock.running():
        other = threading.Thread(target=other_call)
        other.start()
        entered.wait()
        time.sleep(0.05)
    both = time.perf_counter() - started
    time.sleep(0.05)  # the other call alone: still busy
    leave.set()
    other.join()
    whole = time.perf_counter() - started
    assert both + 0.05 <= clock.seconds <= whole  # the union of the two calls, not their sum (about twice both)
    before = clock.seconds
    time.sleep(0.05)  # no call under way: not counted
    started = time.perf_counter()
    with clock.running():
        time.sleep(0.01)
    assert 0.01 <= clock.seconds - before <= time.perf_counter() - started


def test_the_busy_clock_knows_when_its_first_call_since_a_mark_began_and_its_last_ended():
    clock = BusyClock()
    with clock.running():
        time.sleep(0.01)
    before_mark = clock.first_started
    clock.mark()
    assert clock.first_started is None  # no call since the mark
    marked = time.perf_counter()
    time.sleep(0.02)
    with clock.running():
        time.sleep(0.01)
    with clock.running():
        pass
    ended = time.perf_counter()
    assert before_mark < marked + 0.02 <= clock.first_started <= clock.last_ended <= ended
    assert clock.first_started < ended - 0.01  # the first call's start, not the last one's


def test_a_sessions_busy_time_leaves_out_the_opening_of_its_sets(lite0):
    session = open_session(lite0, ["head"], resolve_runtime("cpu", batch_size=2, fixed_shape=True, bound_buffers=1),
                           threads=1)
    started = time.perf_counter()
    session.run(np.zeros((2, 32, 32, 3), np.uint8))  # opens the shape's set, then computes
    first = time.perf_counter() - started
    assert 0 < session.busy.seconds <= first - session.opening_seconds


def test_each_set_of_bound_buffers_always_runs_on_its_own_thread(lite0, monkeypatch):
    """onnxruntime keeps a captured CUDA graph with the thread that captured it: whichever
    thread calls run(), a set's batches run on the one thread the set owns."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tlfs.models.session import TapSession

    ran_on: dict[int, set[int]] = {}
    real = TapSession._run_bound

    def recording(self, bound, images):
        ran_on.setdefault(id(bound), set()).add(threading.get_ident())
        return real(self, bound, images)

    monkeypatch.setattr(TapSession, "_run_bound", recording)
    session = open_session(lite0, ["head"], resolve_runtime("cpu", batch_size=2, fixed_shape=True, bound_buffers=2),
                           threads=1)
    callers: set[int] = set()

    def call(images):
        callers.add(threading.get_ident())
        return session.run(images)

    images = np.full((2, 32, 32, 3), 7, np.uint8)
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(call, [images] * 12))
    call(images)
    assert len(ran_on) == 2 and all(len(threads) == 1 for threads in ran_on.values())
    owners = set().union(*ran_on.values())
    assert len(owners) == 2 and not owners & callers


def test_the_device_gate_gives_a_capture_the_device_alone():
    """A set's opening and CUDA-graph capture wait for the runs under way, and no run
    starts until they end: a capture fails if another thread touches the device meanwhile."""
    import threading
    import time

    from tlfs.models.session import DeviceGate

    gate, events, running = DeviceGate(), [], threading.Event()

    def run(name: str, seconds: float) -> None:
        with gate.shared():
            events.append(f"{name} starts")
            running.set()
            time.sleep(seconds)
            events.append(f"{name} ends")

    first = threading.Thread(target=run, args=("run 1", 0.2))
    first.start()
    running.wait()

    def capture() -> None:
        with gate.alone():
            events.append("capture starts")
            time.sleep(0.1)
            events.append("capture ends")

    capturing = threading.Thread(target=capture)
    capturing.start()
    time.sleep(0.05)  # the capture now waits for run 1; run 2 must wait behind it
    second = threading.Thread(target=run, args=("run 2", 0.0))
    second.start()
    for thread in (first, capturing, second):
        thread.join(5)
    assert events == ["run 1 starts", "run 1 ends", "capture starts", "capture ends", "run 2 starts", "run 2 ends"]


def test_many_image_sizes_share_one_dynamic_graph_beyond_the_fixed_ones(lite0):
    session = open_session(lite0, ["head"], resolve_runtime("cpu", batch_size=2, fixed_shape=True))
    sizes = [24, 28, 32, 36, 40, 44]
    for size in sizes:
        out = session.run(np.full((3, size, size, 3), 100, np.uint8))
        assert out["head"].shape == (3, 1280)
    assert len(session._fixed) == 4 and session._dynamic is not None


def test_the_fixed_shape_graph_folds_the_resize_sizes_into_constants(lite0, tmp_path):
    """With the input fixed, onnxruntime's optimizer leaves no Shape node: the resize's
    sizes are constants, so on CUDA no node has to run on the host (no Memcpy) and the
    graph can be captured as a CUDA graph. The dynamic graph keeps its Shape node."""
    import onnx
    import onnxruntime as ort

    def optimized_ops(model: Path) -> Counter:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(tmp_path / f"opt-{model.name}")
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)

    source = local_onnx(lite0, precision="fp16")
    fixed = fixed_shape(source, 8, 32, 32, cache_dir=str(tmp_path))
    assert optimized_ops(source)["Shape"] >= 1
    ops = optimized_ops(fixed)
    assert ops["Shape"] == 0 and ops["Resize"] == 1, ops
    assert not [op for op in ops if op.startswith("Memcpy")]


def test_a_sessions_use_since_an_earlier_look_is_what_it_spent_in_between():
    from tlfs.models.session import SessionUse

    before = SessionUse(busy=2.0, opening=1.5, opening_parts={"session": 1.0, "capture": 0.5})
    after = SessionUse(busy=5.0, opening=2.5, opening_parts={"session": 1.0, "capture": 1.0, "buffers": 0.5})
    assert after.since(before) == SessionUse(busy=3.0, opening=1.0, opening_parts={"capture": 0.5, "buffers": 0.5})
    assert after.since(after) == SessionUse()
