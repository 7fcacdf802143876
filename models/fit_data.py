"""What a head is fitted on: training and validation examples, the number of classes,
and the widths of the layers concatenated in the features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Examples:
    """Feature rows ``X`` (one per image) and their labels ``y`` (class indices)."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FitData:
    """``train`` fits the head; ``validation`` chooses its settings (the L2 strength, when
    boosting or training stops). ``block_dims``: the widths of the layers concatenated in
    the features (None: one layer), which each head's scaling weighs alike."""

    train: Examples
    validation: Examples
    classes: int
    block_dims: list[int] | None = None

    @property
    def width(self) -> int:
        return self.train.X.shape[1]
