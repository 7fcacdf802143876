"""The most similar rows of a matrix of features to each query row, by the cosine of their
vectors (scikit-learn's exact, brute-force search, in chunks that bound the memory it takes)."""

from __future__ import annotations

import numpy as np


def most_similar(queries: np.ndarray, references: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, similarities)``, each ``[len(queries), min(k, len(references))]``: each query
    row's ``k`` most similar rows of ``references``, most similar first (the cosine of their
    feature vectors; a zero vector is like nothing)."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=min(k, len(references)), metric="cosine", algorithm="brute")
    search.fit(references)
    distances, indices = search.kneighbors(queries)
    return indices, (1.0 - distances).astype(np.float32)


def nearest(queries: np.ndarray, references: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(index, similarity)`` of each query row's most similar row of ``references``.
    Without ``references``, among the queries themselves, each row's own left out."""
    within = references is None
    indices, similarities = most_similar(queries, queries if within else references, 2 if within else 1)
    rows, column = np.arange(len(queries)), np.zeros(len(queries), dtype=np.int64)
    if within:  # a row's nearest is itself, unless an exact copy ties with it: take the first that is not
        column = (indices[:, 0] == rows).astype(np.int64)
    return indices[rows, column], similarities[rows, column]
