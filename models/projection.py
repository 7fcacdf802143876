"""Feature rows drawn on a plane: PCA (the two directions of most variance, exact and
quick) or t-SNE (van der Maaten and Hinton, 2008: neighbours kept neighbours, for a map of
clusters), both scikit-learn's, on standardised features."""

from __future__ import annotations

import numpy as np

from tlfs.models.errors import ModelError

METHODS = ("tsne", "pca")
PCA_BEFORE_TSNE = 50  # dimensions t-SNE starts from: the usual first step, which keeps its cost in n, not in d
PERPLEXITY = 30.0


def project_2d(X: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``[len(X), 2]`` float32 coordinates of each row (deterministic for a ``seed``)."""
    from sklearn.decomposition import PCA

    if method not in METHODS:
        raise ModelError(f"unknown projection {method!r}: use one of {', '.join(METHODS)}")
    if len(X) < 3:
        raise ModelError(f"{len(X)} rows: a map needs at least 3")
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 1e-6, std, 1.0)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(Z).astype(np.float32)
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(PCA_BEFORE_TSNE, *Z.shape), random_state=seed).fit_transform(Z)
    perplexity = min(PERPLEXITY, (len(X) - 1) / 3)  # t-SNE needs fewer neighbours than rows
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(reduced).astype(np.float32)
