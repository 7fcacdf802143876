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


# the cosines of one chunk of queries against every reference: bounds the memory a search takes
CHUNK_BYTES = 256 * 2**20


def unit_layers(matrix: np.ndarray, widths: list[int]) -> np.ndarray:
    """The rows of ``matrix`` (layers side by side, ``widths`` wide) with each layer's part
    scaled to unit length and the whole row to unit length again: each layer counts the same
    in a cosine, whatever its width or scale (a zero part stays zero)."""
    if sum(widths) != matrix.shape[1]:
        raise ValueError(f"layer widths {widths} do not add up to the matrix's {matrix.shape[1]} columns")
    parts, start = [], 0
    for width in widths:
        part = matrix[:, start:start + width].astype(np.float32)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        parts.append(np.divide(part, norms, out=np.zeros_like(part), where=norms > 0))
        start += width
    return np.hstack(parts) / np.float32(np.sqrt(len(widths)))


def kth_similarity(queries: np.ndarray, references: np.ndarray, k: int,
                   query_rows: np.ndarray | None = None) -> np.ndarray:
    """Each query row's cosine to its ``k``-th most similar row of ``references``, both of
    unit length (``unit_layers``): the deep k-nearest-neighbour score of Sun et al., 2022, low
    where a row is unlike the references. ``query_rows``: where the queries are rows of
    ``references`` themselves, their indices there, and each query's own row is left out (so
    a reference scores as a new row would; an exact copy of it still counts). A product of
    unit rows and a partial sort, in chunks of queries: scikit-learn's search would scale
    every reference again for each batch of queries."""
    if not 1 <= k <= len(references) - (query_rows is not None):
        raise ValueError(f"k = {k} with {len(references)} reference rows")
    out = np.empty(len(queries), np.float32)
    for part, cosines in _cosine_chunks(queries, references):
        if query_rows is not None:
            cosines[np.arange(len(cosines)), np.asarray(query_rows)[part]] = -np.inf
        kth = cosines.shape[1] - k  # the k-th largest, where an ascending order would put it
        out[part] = np.partition(cosines, kth, axis=1)[:, kth]
    return out


def nearest_unit(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index, similarity)`` of each query row's most similar row of ``references``, both of
    unit length (``unit_layers``): a product of unit rows in chunks of queries, so its memory
    stays within ``CHUNK_BYTES`` whatever the number of queries."""
    index, similarity = np.empty(len(queries), np.int64), np.empty(len(queries), np.float32)
    for part, cosines in _cosine_chunks(queries, references):
        index[part] = cosines.argmax(axis=1)
        similarity[part] = cosines[np.arange(len(cosines)), index[part]]
    return index, similarity


def _cosine_chunks(queries: np.ndarray, references: np.ndarray):
    """``(slice of the queries, their cosines to every reference)``, chunk by chunk: each
    chunk's products of unit rows within ``CHUNK_BYTES``."""
    rows = max(1, CHUNK_BYTES // (4 * max(1, len(references))))
    for start in range(0, len(queries), rows):
        part = slice(start, start + rows)
        yield part, queries[part].astype(np.float32, copy=False) @ references.T
