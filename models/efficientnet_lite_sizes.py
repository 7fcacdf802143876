"""EfficientNet-Lite's sizes (each variant's input size and stages), apart from the
network (models/efficientnet_lite.py) so that the backbone registry reads them without
importing torch: planning a run on an exported version needs no torch.
"""

from __future__ import annotations

# Per stage: (repeats, kernel, stride, expand ratio, in channels, out channels), as in the
# TF reference after its width and depth scaling (read off the shipped state dicts).
KERNELS, STRIDES, EXPANDS = (3, 3, 5, 3, 5, 5, 3), (1, 2, 2, 2, 1, 2, 1), (1, 6, 6, 6, 6, 6, 6)


def _stages(repeats: tuple[int, ...], channels: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple((r, k, s, e, c_in, c_out)
                 for r, k, s, e, c_in, c_out in zip(repeats, KERNELS, STRIDES, EXPANDS, (32,) + channels[:-1], channels))


VARIANTS = {  # name -> (input size, stages)
    "lite0": (224, _stages((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320))),
    "lite1": (240, _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320))),
    "lite2": (260, _stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352))),
}


def stage_ends(variant: str) -> list[int]:
    """The index of each stage's last block: where the taps of the registry sit."""
    ends, total = [], 0
    for repeats, *_ in VARIANTS[variant][1]:
        total += repeats
        ends.append(total - 1)
    return ends
