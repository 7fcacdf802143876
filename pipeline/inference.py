"""Batched inference's host work: a batch assembled from decoded images (with its
views), and a shard's outputs gathered in its images' order as float16."""

from __future__ import annotations

import numpy as np

from tlfs.features.schema import FEATURE_DTYPE
from tlfs.pipeline.views import VIEWS


def assemble(images: list[np.ndarray], views: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One uint8 NHWC batch per view, from images of one shape."""
    batch = np.stack(images)
    return {view: VIEWS[view](batch) for view in views}


def gather_shard(parts: list[dict[str, np.ndarray]], positions: list[np.ndarray],
                 widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Each layer's ``[rows, width]`` float16 matrix: the batches' outputs (``parts``,
    each of the rows at ``positions`` in the shard) in position order."""
    if not parts:
        return {layer: np.zeros((0, width), FEATURE_DTYPE) for layer, width in widths.items()}
    order = np.argsort(np.concatenate(positions), kind="stable")
    return {layer: np.concatenate([part[layer] for part in parts])[order].astype(FEATURE_DTYPE)
            for layer in widths}
