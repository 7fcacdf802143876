"""Views: the images a feature set stores features of, beside the original. ``flip`` is
the horizontally flipped image, a free augmentation for heads: its rows are extra
training rows, and test-time predictions average over the views (pipeline/fit.py).
Each view is a function of a uint8 NHWC batch."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tlfs.features.layout import ORIGINAL
from tlfs.models.names import EXTRA_VIEWS
from tlfs.pipeline.errors import PipelineError

VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    ORIGINAL: lambda batch: batch,
    "flip": lambda batch: np.ascontiguousarray(batch[:, :, ::-1, :]),  # left-right: the W axis
}


def check_views(views: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The views to extract, the original first (always stored), each once."""
    wanted = [v.strip() for v in (views or []) if v and v.strip()]
    unknown = [v for v in wanted if v not in VIEWS]
    if unknown:
        raise PipelineError(f"unknown view {unknown[0]!r}: use {', '.join(v for v in VIEWS if v != ORIGINAL)}")
    return (ORIGINAL, *dict.fromkeys(v for v in wanted if v != ORIGINAL))


assert set(VIEWS) == {ORIGINAL, *EXTRA_VIEWS}, "models/names.py names the views users pick from"
