"""Each image's nearest neighbour among others by the cosine similarity of their features
(scikit-learn's exact, brute-force search, in chunks that bound the memory it takes)."""

from __future__ import annotations

import numpy as np


def nearest(queries: np.ndarray, references: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(index, similarity)`` of each query row's most similar row of ``references`` (the
    cosine of their feature vectors; a zero vector is like nothing). Without ``references``,
    among the queries themselves, each row's own left out."""
    from sklearn.neighbors import NearestNeighbors

    within = references is None
    search = NearestNeighbors(n_neighbors=2 if within else 1, metric="cosine", algorithm="brute")
    search.fit(queries if within else references)
    distances, indices = search.kneighbors(queries)
    if within:  # a row's nearest is itself, unless an exact copy ties with it: take the first that is not
        other = (indices[:, 0] == np.arange(len(queries))).astype(np.int64)
        rows = np.arange(len(queries))
        distances, indices = distances[rows, other][:, None], indices[rows, other][:, None]
    return indices[:, 0], (1.0 - distances[:, 0]).astype(np.float32)
