"""How the layer sweep breaks a tie of validation accuracies on small training sets: many
random small subsets of a committed set's training split (``--per-class`` images a class),
a softmax head fitted on every layer of each as `tlfs sweep` fits it (the same validation
split), and the layer chosen among the tied best two ways: the earliest, and the one whose
head gave the validation images' labels the most probability (the lowest log-loss, the
sweep's rule). Each choice is scored on ``--test-images`` test images drawn at random.

    python scripts/layer-tie-bench.py --dataset cifar10 --per-class 5 --per-class 10 --per-class 20 \\
        --per-class 50 [--subsets 30] [--backbone B] [--store URI] [--test-images 2000]

One JSON line a training size at the end. The store is only read."""

import argparse
import json
import time

import numpy as np

from tlfs.features.reader import open_set
from tlfs.models import heads
from tlfs.models.fit_data import Examples, FitData
from tlfs.pipeline.fit import log_loss, validation_split


def one_subset(train: dict, test: dict, classes: int, per_class: int, test_images: int, seed: int) -> dict:
    """Every layer's validation accuracy, validation log-loss and test accuracy on one draw."""
    rng = np.random.default_rng(seed)
    y_all, y_test_all = next(iter(train.values()))[1], next(iter(test.values()))[1]
    rows = np.concatenate([rng.choice(np.flatnonzero(y_all == c), per_class, replace=False) for c in range(classes)])
    test_rows = rng.choice(len(y_test_all), min(test_images, len(y_test_all)), replace=False)
    y = y_all[rows]
    fit_idx, val_idx = validation_split(y, seed)
    scores = {}
    for layer, (X_all, _) in train.items():
        X = X_all[rows].astype(np.float32)
        head, _ = heads.fit("softmax", FitData(Examples(X[fit_idx], y[fit_idx]), Examples(X[val_idx], y[val_idx]), classes),
                            log=lambda *_: None)
        proba = head.predict_proba(X[val_idx])
        predicted = head.predict(test[layer][0][test_rows].astype(np.float32))
        scores[layer] = {"validation": float((proba.argmax(axis=1) == y[val_idx]).mean()),
                         "log_loss": log_loss(y[val_idx], proba),
                         "test": float((predicted == y_test_all[test_rows]).mean())}
    return {"validation_images": int(len(val_idx)), "scores": scores}


def choices(scores: dict) -> tuple[str, str, bool]:
    """(the earliest of the best by validation accuracy, the surest of them, whether they tied)."""
    layers = list(scores)
    earliest = max(layers, key=lambda layer: scores[layer]["validation"])
    surest = max(layers, key=lambda layer: (scores[layer]["validation"], -scores[layer]["log_loss"]))
    tied = sum(scores[layer]["validation"] == scores[earliest]["validation"] for layer in layers) > 1
    return earliest, surest, tied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--store", default=None)
    parser.add_argument("--per-class", type=int, action="append", required=True)
    parser.add_argument("--subsets", type=int, default=30)
    parser.add_argument("--test-images", type=int, default=2000)
    args = parser.parse_args()
    started = time.perf_counter()
    feature_set = open_set(args.dataset, args.backbone, args.store)
    train = {layer: feature_set.matrix(layer, "train")[:2] for layer in feature_set.layers}
    test = {layer: feature_set.matrix(layer, "test")[:2] for layer in feature_set.layers}
    for per_class in args.per_class:
        earliest_test, surest_test, ties, validation_images = [], [], 0, 0
        for seed in range(args.subsets):
            subset = one_subset(train, test, len(feature_set.classes), per_class, args.test_images, seed)
            earliest, surest, tied = choices(subset["scores"])
            earliest_test.append(subset["scores"][earliest]["test"])
            surest_test.append(subset["scores"][surest]["test"])
            ties += tied
            validation_images = subset["validation_images"]
        better = sum(s > e for e, s in zip(earliest_test, surest_test))
        worse = sum(s < e for e, s in zip(earliest_test, surest_test))
        print(f"{per_class} a class ({validation_images} validation images), {args.subsets} subsets: the best tied in "
              f"{ties}; the chosen layer's test accuracy, mean: earliest {np.mean(earliest_test):.4f}, surest "
              f"{np.mean(surest_test):.4f} (better in {better}, worse in {worse})")
        print(json.dumps({"per_class": per_class, "subsets": args.subsets, "validation_images": validation_images,
                          "tied": ties, "earliest_test_accuracy": round(float(np.mean(earliest_test)), 4),
                          "surest_test_accuracy": round(float(np.mean(surest_test)), 4), "better": better, "worse": worse,
                          "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
