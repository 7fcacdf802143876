"""The writer pool starts a shard's files widest layer first, so that a shard's largest
file never runs alone at its end while the other threads have nothing left to write."""

from __future__ import annotations

from tlfs.pipeline.shard_writer import widest_first
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
