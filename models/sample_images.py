"""Real photos for export parity checks and weight sanity checks.

scikit-image ships these photos inside its wheel (no download): chelsea (a cat),
coffee (an espresso cup), rocket and astronaut.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def photo(name: str) -> np.ndarray:
    """A sample photo as uint8 HxWx3."""
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def parity_batches() -> list[np.ndarray]:
    """Each photo alone at 224, and all of them as one batch of CIFAR-sized 32x32 images."""
    photos = [photo(n) for n in PHOTOS]
    singles = [resized(p, 224)[None] for p in photos]
    return singles + [np.stack([resized(p, 32) for p in photos])]
