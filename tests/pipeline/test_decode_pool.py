"""pipeline/decode_pool.py: the reading thread and the decode worker processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tlfs.pipeline.indexing import build_index
from tlfs.pipeline import decode_pool
from tlfs.pipeline.decode_pool import Decoder, cut_chunks
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.errors import PipelineError
from tests.conftest import folder_images, write_tree
from tests.faults import python_path


def decode_all(index, workers):
    with Decoder(workers) as decoder:
        rows = [(position, entry.image_id, None if image is None else image.tobytes(), reason)
                for position, entry, image, reason in decoder.decoded(index.sources, index.entries, 224, None)]
        return rows, decoder.stats


def test_worker_processes_decode_exactly_what_the_reading_thread_decodes_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_pool, "CHUNK_IMAGES", 7)  # many chunks, taken back in order from 3 workers
    files = folder_images(per_class=25)
    files["train/red/broken.jpg"] = b"\xff\xd8 not really a jpeg"
    index = build_index("colors", [str(write_tree(tmp_path / "d", files))])
    one, stats_one = decode_all(index, 1)
    three, stats_three = decode_all(index, 3)
    assert one == three and [row[0] for row in three] == list(range(len(index.entries)))
    assert sum(row[3] is not None for row in three) == 1
    assert stats_one.images == stats_three.images == len(index.entries) and stats_three.decode_seconds > 0


def test_a_chunks_decode_seconds_are_the_cpu_it_took_not_the_time_it_waited(monkeypatch):
    """A worker preempted by the run's other threads (on a machine whose cores they share)
    waits without decoding: its wait is not decoding's cost."""
    def slow_decode(payload, input_size, bit_depth):
        time.sleep(0.05)  # off the CPU, as a preempted worker is
        return np.zeros((2, 2, 3), np.uint8)

    monkeypatch.setattr(decode_pool, "decode", slow_decode)
    started = time.perf_counter()
    decoded, seconds = decode_pool.decode_chunk([b"a", b"b", b"c", b"d"], 224)
    assert time.perf_counter() - started >= 0.2 and len(list(decoded)) == 4
    assert 0 <= seconds < 0.05


def test_small_images_go_to_a_worker_in_large_chunks_and_photos_in_a_few():
    """A chunk holds CHUNK_IMAGES images, or fewer once their payloads reach CHUNK_BYTES;
    every payload is in exactly one chunk, in order (a stream is cut as it comes)."""
    cifar = [np.zeros((32, 32, 3), np.uint8)] * 600  # 3 KB each
    photos = [b"x" * 300_000] * 40  # encoded photos of 300 KB
    reasons = [Unreadable("gone")] * 300  # weigh nothing
    for payloads in (cifar, photos, reasons, cifar[:10] + photos[:30] + reasons[:5]):
        chunks = list(cut_chunks(iter(payloads)))
        assert [p for chunk in chunks for p in chunk] == payloads
        for chunk in chunks[:-1]:  # each full: by count, or by the bytes its payloads hold
            held = sum(decode_pool.payload_bytes(p) for p in chunk)
            assert len(chunk) == decode_pool.CHUNK_IMAGES or held >= decode_pool.CHUNK_BYTES
            assert held - decode_pool.payload_bytes(chunk[-1]) < decode_pool.CHUNK_BYTES  # and not before
    assert [len(c) for c in cut_chunks(cifar)] == [256, 256, 88]
    assert [len(c) for c in cut_chunks(photos)] == [14, 14, 12]  # 4 MB of payloads each
    assert [len(c) for c in cut_chunks([(n, p) for n, p in enumerate(photos)], payload_of=lambda item: item[1])] == [14, 14, 12]


def test_a_chunk_of_one_shape_comes_back_as_one_array_and_each_image_in_its_place():
    """A worker answers a chunk whose images share one shape as one array (one pickle, not
    one per image); iterating gives each payload's image, or its reason, in order."""
    import pickle

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    results = [(images[0], None), (None, "not an image"), *[(image, None) for image in images[1:]]]
    packed = decode_pool.Decoded.of(results)
    assert isinstance(packed.images, np.ndarray) and packed.images.shape == (5, 32, 32, 3)
    back = list(pickle.loads(pickle.dumps(packed)))
    assert len(back) == len(results) == len(packed)
    for (image, reason), (want_image, want_reason) in zip(back, results):
        assert reason == want_reason and (image is None if want_image is None else np.array_equal(image, want_image))
    assert len(pickle.dumps(packed)) < 5 * 32 * 32 * 3 + 1000  # the pixels and little else
    mixed = decode_pool.Decoded.of([(images[0], None), (np.zeros((8, 8, 3), np.uint8), None)])
    assert isinstance(mixed.images, list) and [i.shape for i, _ in mixed] == [(32, 32, 3), (8, 8, 3)]
    assert list(decode_pool.Decoded.of([(None, "gone")])) == [(None, "gone")]


def test_a_negative_worker_count_is_refused():
    with pytest.raises(PipelineError, match="decode workers"):
        Decoder(-1)


KILLED_RUN = r"""
import json, os, signal, sys
from tlfs.pipeline.indexing import build_index
from tlfs.pipeline import decode_pool
from tlfs.pipeline.decode_pool import Decoder, cut_chunks
from tlfs.pipeline.image_decode import Unreadable
index = build_index("colors", [sys.argv[1]])
decoder = Decoder(2)
for _ in decoder.decoded(index.sources, index.entries, 224, None):
    pass
print(json.dumps([p.pid for p in decoder._pool._processes.values()]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.faults
def test_a_killed_run_leaves_no_decode_worker_behind(tmp_path):
    source = write_tree(tmp_path / "d", folder_images(per_class=4))
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(source)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": python_path(faults=False), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    workers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert workers  # the pool starts processes as work arrives: at least one
    deadline = time.monotonic() + 120  # a bound for a hung worker, not a speed target: the loop ends once they are gone
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                              for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


SLOW_WORKER_START = r"""
import os, sys, time
if "--multiprocessing-fork" in sys.orig_argv:  # a decode worker, as it starts: mark it, then import slowly
    open(os.path.join(os.environ["TLFS_MARKS"], str(os.getpid())), "w").close()
    time.sleep(3)
"""

STARTING_RUN = r"""
import sys
from tlfs.pipeline.decode_pool import Decoder
try:
    with Decoder(2) as decoder:
        decoder.start()
        print("started", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.faults
def test_ctrl_c_while_the_workers_start_stops_the_run_without_a_workers_traceback(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group, workers still importing
    included: the run takes it, no worker prints a traceback, and none is left behind."""
    site, marks = tmp_path / "site", tmp_path / "marks"
    site.mkdir(), marks.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_WORKER_START)
    run = subprocess.Popen([sys.executable, "-c", STARTING_RUN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True,
                           env={"PYTHONPATH": f"{site}:{python_path(faults=False)}", "PATH": "/usr/bin:/bin",
                                "TLFS_MARKS": str(marks)})
    deadline = time.monotonic() + 120  # a bound for a hung start, not a speed target
    while len(list(marks.iterdir())) < 2:  # both workers are importing
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-2000:]
        time.sleep(0.02)
    workers = [int(mark.name) for mark in marks.iterdir()]
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert (run.returncode, out.strip()) == (130, "interrupted"), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                              for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


DYING_WORKER_START = r"""
import os, sys
if "--multiprocessing-fork" in sys.orig_argv:  # a decode worker dies as it starts (a broken install, no memory)
    os._exit(3)
"""

STARTING_RUN_ERRORS = r"""
from tlfs.pipeline.decode_pool import Decoder
from tlfs.pipeline.errors import PipelineError
try:
    Decoder(2).start()
except PipelineError as exc:
    print(exc)
"""


@pytest.mark.faults
def test_a_worker_that_dies_starting_is_a_clear_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DYING_WORKER_START)
    proc = subprocess.run([sys.executable, "-c", STARTING_RUN_ERRORS], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{site}:{python_path(faults=False)}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("a decode worker process failed to start"), proc.stdout


def test_start_returns_once_every_worker_is_set_up():
    """A benchmark's warm-up: after ``start()`` no worker is still importing (each already
    ignores Ctrl-C, the last step of its setup but one)."""
    def ignores_sigint(pid: int) -> bool:
        ignored = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("SigIgn:"))
        return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)))

    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads a process's ignored signals from Linux's /proc")
    for _ in range(3):  # a worker left importing showed in about half the starts
        with Decoder(2).start() as decoder:
            assert all(ignores_sigint(process.pid) for process in decoder._pool._processes.values())


MAIN_SCRIPT = r"""
import sys
if __name__ != "__main__":
    raise SystemExit("this script ran again in a decode worker")  # as `airflow` would, in a task process
from tlfs.pipeline.indexing import build_index
from tlfs.pipeline import decode_pool
from tlfs.pipeline.decode_pool import Decoder, cut_chunks
from tlfs.pipeline.image_decode import Unreadable
index = build_index("colors", [sys.argv[1]])
with Decoder(2) as decoder:
    print(sum(1 for _ in decoder.decoded(index.sources, index.entries, 224, None)))
"""


def test_workers_do_not_run_the_parents_main_script_again(tmp_path):
    source = write_tree(tmp_path / "d", folder_images(per_class=4))
    script = tmp_path / "program.py"
    script.write_text(MAIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(source)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": python_path(faults=False), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "24"


def test_by_default_decoding_takes_every_core_beside_a_gpu_and_a_quarter_beside_cpu_inference():
    import os

    from tlfs.pipeline.decode_pool import Decoder, default_workers

    cores = len(os.sched_getaffinity(0))
    assert default_workers("cuda") == cores and default_workers("cpu") == max(1, cores // 4)
    assert Decoder(0, "cpu").workers == default_workers("cpu") and Decoder(3, "cpu").workers == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_blocks_are_the_chunks_of_each_part_in_order_and_never_hold_two_parts(tmp_path, monkeypatch, workers):
    """A run's shards are one stream of blocks (positions counted through them all), cut
    per shard, so that a shard's batcher takes whole blocks; a block of one image shape
    holds its images as one array."""
    monkeypatch.setattr(decode_pool, "CHUNK_IMAGES", 3)
    index = build_index("colors", [str(write_tree(tmp_path / "d", folder_images(per_class=2)))])
    parts = [index.entries[:7], index.entries[7:12]]
    with Decoder(workers) as decoder:
        blocks = list(decoder.blocks(index.sources, parts, 224, None))
    assert [(b.start, len(b)) for b in blocks] == [(0, 3), (3, 3), (6, 1), (7, 3), (10, 2)]
    assert [e for b in blocks for e in b.entries] == parts[0] + parts[1]
    assert all(b.decoded.one_shape and b.decoded.images.shape[0] == len(b) for b in blocks)
    assert [position for b in blocks for position, *_ in b.items()] == list(range(12))
