"""The writer pool starts a shard's files widest layer first, so that a shard's largest
file never runs alone at its end while the other threads have nothing left to write; it
takes every core beside a GPU and a quarter of them where the session runs on the CPU."""

from __future__ import annotations

from tlfs.pipeline.shard_writer import MAX_WRITER_THREADS, widest_first, writer_threads
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
