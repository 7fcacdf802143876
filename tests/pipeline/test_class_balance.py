import numpy as np
import pytest

from tlfs.pipeline.class_balance import IMBALANCE_NOTED, balanced_accuracy, class_balance


def test_the_balanced_accuracy_is_scikit_learns_and_the_accuracy_where_the_classes_are_equal():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.choice(4, 500, p=[0.7, 0.2, 0.07, 0.03])
    predicted = np.where(rng.random(500) < 0.8, y, rng.integers(0, 4, 500))
    assert balanced_accuracy(y, predicted) == pytest.approx(balanced_accuracy_score(y, predicted), abs=1e-6)
    equal = np.repeat(np.arange(4), 25)
    guess = np.roll(equal, 7)
    assert balanced_accuracy(equal, guess) == pytest.approx((equal == guess).mean())
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.5  # the rare class counts as much
    assert np.isnan(balanced_accuracy(np.zeros(0, int), np.zeros(0, int)))


def test_the_classes_are_imbalanced_from_the_commonest_at_three_times_the_rarest_and_an_empty_class_is_left_out():
    classes = ["a", "b", "c", "d"]
    just = class_balance(np.repeat([0, 1, 2], [30, 12, 10]), classes)  # d has no image
    assert (just.commonest, just.commonest_images, just.rarest, just.rarest_images) == ("a", 30, "c", 10)
    assert just.ratio == IMBALANCE_NOTED and just.imbalanced
    assert just.line() == "the classes are imbalanced: a has 30 training images, c 10 (3x)"
    below = class_balance(np.repeat([0, 1], [29, 10]), classes)
    assert not below.imbalanced and below.to_json() == {"commonest": "a", "commonest_images": 29, "rarest": "b",
                                                         "rarest_images": 10, "ratio": 2.9, "imbalanced": False}
