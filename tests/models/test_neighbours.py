"""Each row's nearest neighbour by cosine similarity: among other rows, or among its own
split with itself left out, exact copies finding each other."""

import numpy as np

from tlfs.models.neighbours import nearest


def test_each_query_finds_its_most_similar_reference_and_the_cosine():
    references = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    queries = np.array([[0.1, 2.0, 0.0], [3.0, 0.0, 3.0], [0, 0, 0]], np.float32)
    index, similarity = nearest(queries, references)
    assert index[:2].tolist() == [1, 0]
    np.testing.assert_allclose(similarity[:2], [2.0 / np.hypot(0.1, 2.0), np.sqrt(0.5)], rtol=1e-6)
    assert similarity[2] == 0.0  # a zero vector is like nothing


def test_within_one_split_a_row_is_never_its_own_neighbour_and_copies_find_each_other():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8)).astype(np.float32)
    X[7] = X[31]  # an exact copy
    X[12] = X[40] * 3 + 1e-3  # a near one, scaled
    index, similarity = nearest(X)
    assert (index != np.arange(50)).all()
    assert (index[7], index[31]) == (31, 7) and similarity[7] == similarity[31] == 1.0
    assert (index[12], index[40]) == (40, 12) and similarity[12] > 0.9999
    assert similarity[[i for i in range(50) if i not in (7, 31, 12, 40)]].max() < 0.99
