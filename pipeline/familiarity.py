"""Whether an image is like a feature set's training images at all (``tlfs predict
--unfamiliar``): a head always answers with one of its classes, even for an image of none of
them; its probability says how sure it is between its classes, not whether the image belongs
to any. This measures the second thing apart, by deep nearest neighbours (Sun, Ming, Zhu and
Li, ICML 2022): the cosine of an image's features to its k-th most similar training image,
each layer scaled to unit length. The threshold is drawn from the set's own training images,
each scored against the others: with ``share`` 0.95, 95 % of them count as familiar, so a new
image of the same kind is marked unfamiliar about 5 % of the time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

if TYPE_CHECKING:
    from tlfs.features.feature_set import FeatureSet

# the k of the k-th most similar training image, where the set's smallest class has twice as many
# (Sun et al.'s choice for CIFAR-10; on its block15, images of another kind found 92.5 % against 88.2 % at 10)
NEIGHBOURS = 50
FAMILIAR_SHARE = 0.95  # of the set's own training images, the share that counts as familiar
CALIBRATION_IMAGES = 5_000  # training images scored against the others to draw the threshold from
SPLIT = "train"


@dataclass(frozen=True)
class Familiarity:
    """What new images are measured against: the training images' features (each layer at
    unit length) and the similarity below which an image is unfamiliar."""
    layers: tuple[str, ...]
    widths: tuple[int, ...]
    references: np.ndarray  # [training images, sum(widths)], rows of unit length
    neighbours: int
    share: float
    threshold: float  # the (1 - share) quantile of the calibration images' similarities
    calibration_images: int

    def similarity(self, features: np.ndarray) -> np.ndarray:
        """Each row's cosine to its k-th most similar training image (``features``: the layers
        side by side, as ``features_as_stored`` gives them)."""
        from tlfs.models.neighbours import kth_similarity, unit_layers

        return kth_similarity(unit_layers(features, list(self.widths)), self.references, self.neighbours)

    def summary(self) -> dict:
        return {"layers": list(self.layers), "neighbours": self.neighbours, "share": self.share,
                "threshold": round(self.threshold, 6), "training_images": len(self.references),
                "calibration_images": self.calibration_images}


def default_neighbours(labels: np.ndarray) -> int:
    """``NEIGHBOURS``, or half the smallest class's training images where fewer: the k-th most
    similar image of a familiar one is then still one of its own class."""
    counts = np.bincount(labels)
    return int(max(1, min(NEIGHBOURS, counts[counts > 0].min() // 2)))


def _check_options(neighbours: int | None, share: float) -> None:
    if neighbours is not None and neighbours < 1:
        raise PipelineError(f"neighbours {neighbours}: at least 1")
    if not 0.0 < share < 1.0:
        raise PipelineError(f"familiar share {share}: a fraction between 0 and 1 (0.95: 95 % of the training images count "
                            "as familiar)")


def familiarity_of(feature_set: FeatureSet, layers: list[str], neighbours: int | None = None,
                   share: float = FAMILIAR_SHARE, calibration_images: int = CALIBRATION_IMAGES, seed: int = 0,
                   log: Callable[[str], None] = print) -> Familiarity:
    """Familiarity with the training split's features of ``layers`` (the original images,
    not their views); ``neighbours`` None: ``default_neighbours`` of its labels."""
    _check_options(neighbours, share)
    if SPLIT not in feature_set.splits:
        raise PipelineError(f"{feature_set.uri} has no {SPLIT!r} split to measure familiarity against; it has "
                            f"{', '.join(feature_set.splits)}")
    started = time.perf_counter()
    matrices = [feature_set.matrix(layer, SPLIT) for layer in layers]
    blocks = [matrix[0] for matrix in matrices]
    neighbours = neighbours or default_neighbours(matrices[0][1])
    if len(blocks[0]) <= neighbours:
        raise PipelineError(f"{feature_set.uri} has {len(blocks[0])} training images: too few to measure familiarity "
                            f"by the {_ordinal(neighbours)} most similar (--neighbours)")
    familiarity = familiarity_from(dict(zip(layers, blocks)), neighbours, share, calibration_images, seed)
    log(f"familiarity: {len(familiarity.references):,} training images of {'+'.join(layers)}; an image is unfamiliar "
        f"below a cosine of {familiarity.threshold:.4f} to its {_ordinal(neighbours)} most similar ({share:.0%} of "
        f"{familiarity.calibration_images:,} training images reach it), {time.perf_counter() - started:.1f}s")
    return familiarity


def familiarity_from(blocks: dict[str, np.ndarray], neighbours: int = NEIGHBOURS, share: float = FAMILIAR_SHARE,
                     calibration_images: int = CALIBRATION_IMAGES, seed: int = 0) -> Familiarity:
    """Familiarity with the rows of ``blocks`` (a layer's name -> its ``[images, width]``
    features, rows aligned): the threshold is drawn from ``calibration_images`` of them, each
    scored against all the others."""
    from tlfs.models.neighbours import kth_similarity, unit_layers

    widths = [block.shape[1] for block in blocks.values()]
    references = unit_layers(np.hstack(list(blocks.values())), widths)
    rows = np.random.default_rng(seed).permutation(len(references))[:calibration_images]
    calibration = kth_similarity(references[rows], references, neighbours, query_rows=rows)
    return Familiarity(tuple(blocks), tuple(widths), references, neighbours, share,
                       float(np.quantile(calibration, 1.0 - share)), len(rows))


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
