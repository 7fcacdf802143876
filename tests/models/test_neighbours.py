"""Each row's nearest neighbour by cosine similarity: among other rows, or among its own
split with itself left out, exact copies finding each other; the cosine to the k-th most
similar, a query's own row left out; each layer's part of a row weighed the same."""

import numpy as np
import pytest

from tlfs.models.neighbours import kth_similarity, nearest, unit_layers


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


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_kth(queries, references, k, own=None):
    """The k-th largest cosine by a plain sort (each query's own row left out where given)."""
    cosines = unit(queries).astype(np.float64) @ unit(references).T.astype(np.float64)
    if own is not None:
        cosines[np.arange(len(queries)), own] = -np.inf
    return -np.sort(-cosines, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_the_kth_similarity_is_the_kth_largest_cosine(k):
    rng = np.random.default_rng(1)
    references, queries = unit(rng.normal(size=(40, 6))), unit(rng.normal(size=(9, 6)))
    np.testing.assert_allclose(kth_similarity(queries, references, k), brute_kth(queries, references, k), atol=1e-5)


def test_the_search_goes_in_chunks_of_queries_with_the_same_answer(monkeypatch):
    from tlfs.models import neighbours

    rng = np.random.default_rng(3)
    references, queries = unit(rng.normal(size=(50, 4))), unit(rng.normal(size=(23, 4)))
    whole = kth_similarity(queries, references, 3)
    monkeypatch.setattr(neighbours, "CHUNK_BYTES", 4 * 50 * 5)  # 5 queries a chunk
    np.testing.assert_array_equal(kth_similarity(queries, references, 3), whole)
    rows = np.arange(7, 30)
    np.testing.assert_allclose(kth_similarity(references[rows], references, 3, query_rows=rows),
                               brute_kth(references[rows], references, 3, own=rows), atol=1e-5)


@pytest.mark.parametrize("k", [1, 4])
def test_a_reference_scored_against_the_others_leaves_its_own_row_out_even_where_a_copy_ties(k):
    rng = np.random.default_rng(2)
    references = unit(rng.normal(size=(30, 5)))
    references[3] = references[17]  # an exact copy: it counts, the row itself does not
    rows = np.array([3, 17, 0, 29])
    scored = kth_similarity(references[rows], references, k, query_rows=rows)
    np.testing.assert_allclose(scored, brute_kth(references[rows], references, k, own=rows), atol=1e-5)
    assert (scored[:2] == pytest.approx(1.0)) == (k == 1)  # the copy is the nearest other row, at 1
    assert scored[2] < 0.999  # not itself


def test_too_few_references_for_k_is_an_error():
    with pytest.raises(ValueError, match="k = 5 with 5 reference rows"):
        kth_similarity(np.ones((1, 2)), np.ones((5, 2)), 5, query_rows=np.array([0]))


def test_each_layers_part_of_a_row_weighs_the_same_whatever_its_width_and_scale():
    wide = np.array([[300.0] * 8, [0.0] * 8])  # a wide layer of large values, one zero row
    narrow = np.array([[0.5, 0.0], [0.0, 2.0]])
    rows = unit_layers(np.hstack([wide, narrow]).astype(np.float32), [8, 2])
    np.testing.assert_allclose(np.linalg.norm(rows[0, :8]), np.linalg.norm(rows[0, 8:]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), [1.0, np.sqrt(0.5)], rtol=1e-6)  # a zero part stays zero
    with pytest.raises(ValueError, match=r"layer widths \[8, 3\] do not add up to the matrix's 10 columns"):
        unit_layers(rows, [8, 3])


def test_the_nearest_of_unit_rows_in_chunks_is_the_searchs(monkeypatch):
    from tlfs.models import neighbours
    from tlfs.models.neighbours import nearest_unit

    rng = np.random.default_rng(4)
    references, queries = unit(rng.normal(size=(60, 5))), unit(rng.normal(size=(31, 5)))
    expected_index, expected_similarity = nearest(queries, references)
    monkeypatch.setattr(neighbours, "CHUNK_BYTES", 4 * 60 * 7)  # 7 queries a chunk
    index, similarity = nearest_unit(queries, references)
    assert index.tolist() == expected_index.tolist()
    np.testing.assert_allclose(similarity, expected_similarity, atol=1e-5)
