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
    the features (None: one layer), which each head's scaling weighs alike. ``balanced``:
    the head predicts as if every class were equally common, whatever their shares of
    ``train`` (see :func:`class_offsets`)."""

    train: Examples
    validation: Examples
    classes: int
    block_dims: list[int] | None = None
    balanced: bool = False

    @property
    def width(self) -> int:
        return self.train.X.shape[1]


def class_offsets(data: FitData) -> np.ndarray | None:
    """With ``data.balanced``, what each class's logit gains: minus the log of its share of
    the training rows (0 for a class with none). A head's probabilities are then divided by
    the training split's class shares and normalised again: the prediction a classifier
    would make were every class equally common (post-hoc logit adjustment, Menon et al.,
    "Long-tail learning via logit adjustment", ICLR 2021), which raises the recall of rare
    classes and the accuracy averaged over classes. None without ``balanced``."""
    if not data.balanced:
        return None
    counts = np.bincount(data.train.y, minlength=data.classes).astype(np.float64)
    shares = counts / counts.sum()
    return np.where(counts > 0, -np.log(np.where(counts > 0, shares, 1.0)), 0.0).astype(np.float32)
