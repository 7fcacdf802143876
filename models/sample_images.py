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


# Calibration pictures: those scikit-image ships other than the parity photos (a check on
# the pictures a graph was calibrated on would flatter it), colour and greyscale, natural
# and not: a telescope's field, a stained section, a retina, a street, a camera man, textures
CALIBRATION_COLOUR = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo")
CALIBRATION_GREY = ("camera", "brick", "grass", "gravel", "coins", "moon", "clock", "page", "text", "cell")
CALIBRATION_CROPS = 64  # at each of two sizes: CIFAR's 32 and the backbone's input
CALIBRATION_BATCH = 4  # the calibration holds a batch's every activation at once


def calibration_pictures() -> list[np.ndarray]:
    from skimage import data

    colour = [np.ascontiguousarray(getattr(data, n)()[..., :3]) for n in CALIBRATION_COLOUR]
    grey = [np.repeat(getattr(data, n)()[..., None], 3, axis=2) for n in CALIBRATION_GREY]
    return colour + [data.stereo_motorcycle()[0]] + grey


def calibration_batches(input_size: int, seed: int = 0) -> list[np.ndarray]:
    """Square crops of the calibration pictures (a third to the whole of the shorter side,
    half of them flipped), resized to 32 and to ``input_size``, in batches of
    ``CALIBRATION_BATCH``; the same crops for the same seed."""
    rng = np.random.default_rng(seed)
    pictures = calibration_pictures()
    batches = []
    for size in (32, input_size):
        crops = []
        for number in range(CALIBRATION_CROPS):
            picture = pictures[number % len(pictures)]
            height, width = picture.shape[:2]
            side = int(rng.uniform(1 / 3, 1.0) * min(height, width))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = resized(np.ascontiguousarray(picture[top:top + side, left:left + side]), size)
            crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        batches += [np.ascontiguousarray(np.stack(crops[i:i + CALIBRATION_BATCH]))
                    for i in range(0, len(crops), CALIBRATION_BATCH)]
    return batches
