"""The writer pool starts a shard's files widest layer first, so that a shard's largest
file never runs alone at its end while the other threads have nothing left to write; it
takes every core beside a GPU and a quarter of them where the session runs on the CPU; and
beside a GPU whose decode workers leave cores free, it runs below decoding's priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from tlfs.pipeline.shard_writer import (MAX_WRITER_THREADS, WRITER_NICE, ShardWriter, widest_first, writer_threads,
                                        writers_yield)
from tlfs.pipeline.stage_bench import layer_widths


def test_a_shards_files_start_widest_layer_first_ties_in_view_then_tap_order():
    dims = {"block2": 24, "wide": 320, "block4": 40, "head": 320, "top": 1280}
    assert widest_first(("image", "2x2"), dims) == [
        ("image", "top", 1280), ("2x2", "top", 1280),
        ("image", "wide", 320), ("image", "head", 320), ("2x2", "wide", 320), ("2x2", "head", 320),
        ("image", "block4", 40), ("2x2", "block4", 40),
        ("image", "block2", 24), ("2x2", "block2", 24),
    ]


def test_every_file_of_a_real_backbone_is_written_once():
    dims = layer_widths("efficientnet_lite0")
    files = widest_first(("image",), dims)
    assert sorted(layer for _, layer, _ in files) == sorted(dims)
    assert files[0][1] == "head"  # 1,280 of Lite0's 2,048 values an image


def test_the_pool_takes_every_core_beside_a_gpu_and_a_quarter_of_them_where_the_session_runs_on_the_cpu():
    assert [writer_threads(cores, "cuda") for cores in (1, 2, 8, 64)] == [1, 2, 8, MAX_WRITER_THREADS]
    assert [writer_threads(cores, "cpu") for cores in (1, 2, 4, 16, 64)] == [1, 1, 1, 4, MAX_WRITER_THREADS]


def test_the_writers_yield_to_decoding_beside_a_gpu_only_where_the_decode_workers_leave_cores_free():
    assert writers_yield(decode_workers=2, cores=16, device="cuda")
    assert writers_yield(decode_workers=1, cores=2, device="cuda")  # decoding on the reading thread
    assert not writers_yield(decode_workers=16, cores=16, device="cuda")  # the workers take every core
    assert not writers_yield(decode_workers=1, cores=2, device="cpu")  # the sessions take the cores


def _own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own priority is Linux's")
@pytest.mark.parametrize("below_decoding", [True, False])
def test_a_writer_thread_below_decoding_runs_at_a_lower_priority_than_the_run_and_only_it(below_decoding):
    run = _own_priority()
    with ShardWriter(p=None, threads=2, below_decoding=below_decoding) as writer:
        writers = {writer._files.submit(_own_priority).result() for _ in range(4)}
        records = writer._records.submit(_own_priority).result()
    assert writers == {min(19, run + WRITER_NICE) if below_decoding else run}
    assert records == run and _own_priority() == run  # the records thread and the run's own keep theirs
