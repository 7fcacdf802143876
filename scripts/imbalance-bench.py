"""What `tlfs fit --balanced` is worth on imbalanced classes: a committed set's training split
cut to a long tail (class c keeps n_max * ratio^(-c / (classes - 1)) of its images, the
profile of CIFAR-10-LT, Cao et al. 2019), each head fitted on it plain and balanced, as
`tlfs fit` fits it (the same validation split, the original view), then scored on the whole
test split (every class alike: its accuracy is the balanced accuracy) and on a test split cut
to the same tail (the classes as common as in training: where the plain head should win):
accuracy, balanced accuracy, the rarest and the worst class's share found, and the expected
calibration error (how far the probabilities are from how often they are right).

    python scripts/imbalance-bench.py --dataset cifar10 --layer block15 --ratio 100 --ratio 10 \\
        [--head softmax --head mlp] [--backbone B] [--store URI] [--seed 0]

One JSON line a ratio and head at the end. The store is only read."""

import argparse
import json
import time

import numpy as np

from tlfs.features.reader import open_set
from tlfs.models import heads
from tlfs.models.fit_data import Examples, FitData
from tlfs.pipeline.class_balance import balanced_accuracy
from tlfs.pipeline.fit import confidence, validation_split


def long_tail(y: np.ndarray, classes: int, ratio: float, rng, most: int | None = None) -> np.ndarray:
    """Row numbers of ``y`` keeping class c's first ``most * ratio^(-c / (classes - 1))``
    images, drawn at random (``most``: the smallest class's count)."""
    counts = np.bincount(y, minlength=classes)
    most = most or int(counts.min())
    kept = [rng.choice(np.flatnonzero(y == c), max(1, int(most * ratio ** (-c / (classes - 1)))), replace=False)
            for c in range(classes)]
    return np.sort(np.concatenate(kept))


def scores(head: heads.Head, X: np.ndarray, y: np.ndarray) -> dict:
    proba = head.predict_proba(X)
    predicted = proba.argmax(axis=1)
    recalls = [float((predicted[y == c] == c).mean()) for c in np.unique(y)]
    return {"accuracy": round(float((predicted == y).mean()), 4), "balanced_accuracy": round(balanced_accuracy(y, predicted), 4),
            "rarest_recall": round(recalls[-1], 4), "lowest_recall": round(min(recalls), 4),
            "calibration_error": confidence(proba.max(axis=1), predicted == y)["calibration_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--store")
    parser.add_argument("--layer", default="head")
    parser.add_argument("--head", action="append", choices=heads.HEADS, help="repeat (default: softmax)")
    parser.add_argument("--ratio", type=float, action="append", help="the commonest class's images over the rarest's "
                        "(repeat; default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    feature_set = open_set(args.dataset, args.backbone, args.store)
    X, y, _ = feature_set.matrices([args.layer], "train")
    Xt, yt, _ = feature_set.matrices([args.layer], "test")
    classes = len(feature_set.classes)
    results = []
    for ratio in args.ratio or [100.0]:
        rng = np.random.default_rng(args.seed)
        rows = long_tail(y, classes, ratio, rng)
        tail_test = long_tail(yt, classes, ratio, rng)
        fit_idx, val_idx = validation_split(y[rows])
        train, validation = (Examples(X[rows][idx], y[rows][idx]) for idx in (fit_idx, val_idx))
        counts = np.bincount(y[rows], minlength=classes)
        print(f"ratio {ratio:g}: {len(rows):,} training images ({counts.max():,} of the commonest class, {counts.min():,} of "
              f"the rarest); test {len(yt):,} (every class alike) and {len(tail_test):,} (the same tail)", flush=True)
        for kind in args.head or ["softmax"]:
            for balanced in (False, True):
                started = time.perf_counter()
                head, _ = heads.fit(kind, FitData(train, validation, classes, balanced=balanced), log=lambda *_: None)
                result = {"dataset": args.dataset, "layer": args.layer, "ratio": ratio, "head": kind, "balanced": balanced,
                          "train_images": int(len(rows)), "fit_seconds": round(time.perf_counter() - started, 1),
                          "test": scores(head, Xt, yt), "test_same_tail": scores(head, Xt[tail_test], yt[tail_test])}
                results.append(result)
                print(f"  {kind:<8} {'balanced' if balanced else 'plain':<8}  test (classes alike): accuracy "
                      f"{result['test']['accuracy']:.4f}, rarest class found {result['test']['rarest_recall']:.3f}, lowest "
                      f"{result['test']['lowest_recall']:.3f}, calibration error {result['test']['calibration_error']:.3f};  test with the tail: accuracy "
                      f"{result['test_same_tail']['accuracy']:.4f}, balanced {result['test_same_tail']['balanced_accuracy']:.4f}"
                      f"  ({result['fit_seconds']:.0f}s)", flush=True)
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
