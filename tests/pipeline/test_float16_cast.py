"""float32 -> float16 by onnxruntime's Cast gives numpy's bits, value for value, so
features stay byte-identical to numpy's conversion."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tlfs.pipeline.float16_cast import Float16Cast
from tlfs.pipeline.inference import gather_layer


@pytest.fixture(scope="module")
def cast() -> Float16Cast:
    return Float16Cast()


def bits(matrix: np.ndarray) -> np.ndarray:
    return matrix.view(np.uint16)


def edge_values() -> np.ndarray:
    """Zeros, infinities, float16's largest finite and where rounding overflows, its
    subnormals and the ties between them, halfway cases in the normal range."""
    tiny = 2.0 ** -24  # float16's smallest subnormal
    values = [0.0, -0.0, np.inf, -np.inf, 65504.0, -65504.0, 65519.99, 65520.0, -65520.0, 1e30, -1e30,
              tiny, tiny / 2, tiny * 1.5, tiny * 2.5, tiny / 3, 2.0 ** -14, 2.0 ** -14 - tiny / 2,
              1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, -(1.0 + 2.0 ** -11), 2049.0, 2051.0, 1e-45, -1e-45]
    return np.array(values, dtype=np.float32)


def test_every_kind_of_value_casts_to_numpys_bits(cast):
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    patterns = patterns[~np.isnan(patterns)]  # every exponent and sign, NaN apart (below)
    normal = rng.standard_normal(100_000).astype(np.float32) * 4
    for values in (patterns, normal, edge_values()):
        matrix = values[: len(values) // 8 * 8].reshape(-1, 8)
        with np.errstate(over="ignore"):
            expected = matrix.astype(np.float16)
        got = cast(matrix)
        assert got.dtype == np.float16 and got.shape == matrix.shape
        np.testing.assert_array_equal(bits(got), bits(expected))


def test_nan_stays_nan(cast):
    got = cast(np.array([[np.nan, -np.nan, 1.0]], dtype=np.float32))
    assert np.isnan(got[0, :2]).all() and got[0, 2] == 1.0


def test_a_matrix_that_is_not_float32_is_cast_by_numpy_with_its_own_rounding(cast):
    wide = np.array([[1.0 + 2.0 ** -11 + 2.0 ** -40]], dtype=np.float64)  # rounds up from float64, not via float32
    np.testing.assert_array_equal(bits(cast(wide)), bits(wide.astype(np.float16)))


def test_threads_sharing_one_cast_each_get_their_own_result(cast):
    rng = np.random.default_rng(1)
    matrices = [rng.standard_normal((500, 64 + n), dtype=np.float32) for n in range(16)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(cast, matrices))
    for matrix, got in zip(matrices, results):
        np.testing.assert_array_equal(bits(got), bits(matrix.astype(np.float16)))


def test_gather_layer_casts_batches_in_order_in_blocks_of_whole_batches_up_to_its_byte_budget(cast):
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((n, 12), dtype=np.float32) for n in (5, 3, 4, 6)]
    expected = np.concatenate(parts).astype(np.float16)
    for block_bytes, sizes in ((1, [5, 3, 4, 6]), (8 * 12 * 4, [8, 4, 6]), (10 * 12 * 4, [8, 10]), (1 << 20, [18])):
        blocks = gather_layer(parts, np.arange(18), 12, cast, block_bytes=block_bytes)
        assert [len(block) for block in blocks] == sizes  # whole batches, never one past the budget
        np.testing.assert_array_equal(bits(np.concatenate(blocks)), bits(expected))


def test_gather_layer_puts_batches_out_of_order_in_order_as_one_block(cast):
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((n, 12), dtype=np.float32) for n in (5, 3, 4)]
    order = rng.permutation(12)
    (got,) = gather_layer(parts, order, 12, cast)
    np.testing.assert_array_equal(bits(got), bits(np.concatenate(parts).astype(np.float16)[order]))
    (empty,) = gather_layer([], np.zeros(0, int), 12, cast)
    assert empty.shape == (0, 12)
