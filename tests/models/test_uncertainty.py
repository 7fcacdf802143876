"""Which images to label next: the least sure, spread over what they look like."""

import numpy as np
import pytest

from tlfs.models.uncertainty import choose_to_label, margins


def test_the_margin_is_the_likeliest_class_less_the_second():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(margins(probabilities), [0.5, 0.05, 1.0], atol=1e-6)
    assert margins(np.ones((4, 1), np.float32)).tolist() == [1.0] * 4  # one class: always sure


def test_the_least_sure_come_first_and_only_from_the_least_sure_candidates():
    rng = np.random.default_rng(0)
    margin = rng.permutation(np.linspace(0, 1, 500)).astype(np.float32)
    features = rng.normal(size=(500, 8)).astype(np.float32)
    chosen = choose_to_label(margin, features, 20, candidates_per_pick=5)
    assert len(chosen) == len(set(chosen.tolist())) == 20
    assert np.all(np.diff(margin[chosen]) >= 0)  # least sure first
    assert margin[chosen].max() <= np.sort(margin)[99]  # of the 5 x 20 least sure
    assert margin.argmin() == chosen[0]  # the least sure of all is always chosen: its group's first


def test_a_batch_is_spread_over_distinct_confusions_where_margin_alone_is_not():
    """Sixty near-copies of one confusion, a little less sure than forty images of another:
    margin alone takes ten of the first; the choice takes from both."""
    rng = np.random.default_rng(1)
    one = rng.normal(0, 0.01, size=(60, 4)) + [5, 0, 0, 0]
    other = rng.normal(0, 0.5, size=(40, 4)) + [0, 5, 0, 0]
    features = np.vstack([one, other]).astype(np.float32)
    margin = np.concatenate([rng.uniform(0.00, 0.05, 60), rng.uniform(0.05, 0.10, 40)]).astype(np.float32)
    by_margin = np.argsort(margin)[:10]
    assert (by_margin < 60).all()
    chosen = choose_to_label(margin, features, 10)
    assert (chosen < 60).any() and (chosen >= 60).sum() >= 5


def test_identical_images_still_give_as_many_as_asked_and_a_small_pool_gives_every_image():
    margin = np.linspace(0.1, 0.9, 30).astype(np.float32)
    same = np.ones((30, 3), np.float32)
    chosen = choose_to_label(margin, same, 5)
    assert len(set(chosen.tolist())) == 5
    small = choose_to_label(margin[:4][::-1].copy(), same[:4], 10)
    assert small.tolist() == [3, 2, 1, 0]


def test_the_same_pool_gives_the_same_choice_and_a_bad_count_is_refused():
    rng = np.random.default_rng(2)
    margin, features = rng.uniform(size=300).astype(np.float32), rng.normal(size=(300, 5)).astype(np.float32)
    assert choose_to_label(margin, features, 12).tolist() == choose_to_label(margin, features, 12).tolist()
    with pytest.raises(ValueError, match="at least 1"):
        choose_to_label(margin, features, 0)
    with pytest.raises(ValueError, match="300 margins for 2 rows"):
        choose_to_label(margin, features[:2], 3)
