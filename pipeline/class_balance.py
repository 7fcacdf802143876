"""How equally common a set's classes are, and the accuracy that weighs each class alike:
what ``fit`` records of every head and says of its training split, and what ``advise``
shows beside the dataset's size (``fit --balanced`` answers an imbalance)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

IMBALANCE_NOTED = 3.0  # the commonest class's training images over the rarest's from which the classes are imbalanced


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The accuracy of each class present in ``y_true``, averaged over those classes: what
    accuracy would be were every class equally common (scikit-learn's
    ``balanced_accuracy_score``). Equal to the accuracy where the classes are."""
    present = np.unique(y_true)
    if not len(present):
        return float("nan")
    return round(float(np.mean([(y_pred[y_true == c] == c).mean() for c in present])), 6)


@dataclass(frozen=True)
class ClassBalance:
    """The commonest and the rarest class of a split's labels, and their images."""

    commonest: str
    commonest_images: int
    rarest: str
    rarest_images: int

    @property
    def ratio(self) -> float:
        return self.commonest_images / self.rarest_images

    @property
    def imbalanced(self) -> bool:
        return self.ratio >= IMBALANCE_NOTED

    def line(self) -> str:
        return (f"the classes are {'imbalanced' if self.imbalanced else 'balanced'}: {self.commonest} has "
                f"{self.commonest_images:,} training images, {self.rarest} {self.rarest_images:,} ({self.ratio:.0f}x)")

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 2), "imbalanced": self.imbalanced}


def class_balance(y: np.ndarray, classes: list[str]) -> ClassBalance:
    """The :class:`ClassBalance` of the labels ``y`` (class indices into ``classes``; a class
    with no image is left out)."""
    counts = np.bincount(y, minlength=len(classes))
    present = np.flatnonzero(counts)
    common, rare = present[counts[present].argmax()], present[counts[present].argmin()]
    return ClassBalance(classes[common], int(counts[common]), classes[rare], int(counts[rare]))
