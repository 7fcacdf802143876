"""What `tlfs label-next` is worth: labelling rounds simulated on a committed set, whose
training split stands in for a pool of unlabelled images (its labels are read only once an
image is chosen). Each run starts from the same random images; each round fits the head as
`tlfs fit` fits it (on the labelled images, validated on the set's validation images, held
out of the pool as `tlfs fit` holds them out), scores it on the whole test split, then labels
`--batch` more images chosen by each way in turn:

- random: images drawn at random from the pool (what labelling without a choice gives);
- margin: the images of smallest margin (the head least sure between its two likeliest classes);
- label-next: `models/uncertainty.choose_to_label`, what `tlfs label-next` picks (the smallest
  margins, spread by k-means over the head's layers' features, each layer at unit length).

    python scripts/label-next-bench.py --dataset cifar10 --layer block15 --start 500 --batch 500 \\
        --rounds 6 [--head softmax] [--seeds 3] [--copies N] [--tail RATIO] [--backbone B] [--store URI]

One JSON line a way at the end: its mean test accuracy after each round, and the labelled
images at each; then how many randomly chosen images reach the accuracy label-next reaches
(read off the random curve, by linear interpolation; None past its end). The store is only read."""

import argparse
import json
import time

import numpy as np

from tlfs.features.reader import open_set
from tlfs.models import heads
from tlfs.models.fit_data import Examples, FitData
from tlfs.models.names import HEADS
from tlfs.models.neighbours import unit_layers
from tlfs.models.uncertainty import choose_to_label, margins
from tlfs.pipeline.class_balance import balanced_accuracy
from tlfs.pipeline.fit import validation_split

WAYS = ("random", "margin", "label-next")


def next_batch(way: str, head: heads.Head, X: np.ndarray, unit: np.ndarray, pool: np.ndarray, batch: int,
               rng: np.random.Generator) -> np.ndarray:
    if way == "random":
        return rng.choice(pool, min(batch, len(pool)), replace=False)
    margin = margins(head.predict_proba(X[pool]))
    if way == "margin":
        return pool[np.argsort(margin, kind="stable")[:batch]]
    return pool[choose_to_label(margin, unit[pool], batch)]


def run(way: str, X, y, unit, Xt, yt, validation, pool0, classes, args, seed: int, rounds: int
        ) -> tuple[list[float], list[int]]:
    """After each round: the test accuracy (balanced accuracy with --tail), and how many of
    the rarest class's images were labelled."""
    rng = np.random.default_rng(seed)
    labelled = rng.choice(pool0, args.start, replace=False)
    accuracies, rarest = [], []
    for round_ in range(rounds):
        rarest.append(int((y[labelled] == classes - 1).sum()))
        head, _ = heads.fit(args.head, FitData(Examples(X[labelled], y[labelled]), Examples(X[validation], y[validation]),
                                               classes), log=lambda *_: None)
        predicted = head.predict_proba(Xt).argmax(1)
        accuracies.append(balanced_accuracy(yt, predicted) if args.tail else float((predicted == yt).mean()))
        if round_ < rounds - 1:
            pool = np.setdiff1d(pool0, labelled)
            labelled = np.concatenate([labelled, next_batch(way, head, X, unit, pool, args.batch, rng)])
    return accuracies, rarest


def long_tail(pool: np.ndarray, y: np.ndarray, classes: int, ratio: float) -> np.ndarray:
    """``pool`` with class c cut to ``most * ratio^(-c / (classes - 1))`` images (CIFAR-10-LT's
    profile, as scripts/imbalance-bench.py cuts it), drawn at random once."""
    rng = np.random.default_rng(0)
    most = min(int((y[pool] == c).sum()) for c in range(classes))
    return np.sort(np.concatenate([rng.choice(pool[y[pool] == c], max(1, int(most * ratio ** (-c / (classes - 1)))),
                                              replace=False) for c in range(classes)]))


def random_images_for(accuracy: float, sizes: list[int], random_curve: list[float]) -> float | None:
    """Images the random curve needs to reach ``accuracy`` (linear between its points)."""
    for (n0, a0), (n1, a1) in zip(zip(sizes, random_curve), zip(sizes[1:], random_curve[1:])):
        if a0 <= accuracy <= a1 and a1 > a0:
            return round(n0 + (accuracy - a0) / (a1 - a0) * (n1 - n0))
    return sizes[0] if accuracy <= random_curve[0] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--store")
    parser.add_argument("--layer", required=True, help="one layer, or comma-separated layers side by side")
    parser.add_argument("--head", default="softmax", choices=HEADS)
    parser.add_argument("--start", type=int, default=500, help="randomly chosen images labelled before the first round")
    parser.add_argument("--batch", type=int, default=500, help="images labelled each round")
    parser.add_argument("--rounds", type=int, default=6, help="heads fitted (the last after rounds - 1 batches)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each way, each from its own random start")
    parser.add_argument("--copies", type=int, default=1, help="each pool image N times over (as bursts of photos of one "
                        "scene give): where the choice's spreading should count")
    parser.add_argument("--tail", type=float, help="cut the pool to a long tail of this ratio (the commonest class's "
                        "images over the rarest's; the last class rarest) and score by balanced accuracy")
    parser.add_argument("--random-rounds", type=int, help="rounds of random choice (default 2 * rounds - 1: far enough "
                        "to see how many random images reach the others' accuracy)")
    args = parser.parse_args()

    feature_set = open_set(args.dataset, args.backbone, args.store)
    layers = args.layer.split(",")
    X, y, _ = feature_set.matrices(layers, "train")
    Xt, yt, _ = feature_set.matrices(layers, "test")
    pool0, validation = validation_split(y)
    classes = len(feature_set.classes)
    if args.tail:
        pool0 = long_tail(pool0, y, classes, args.tail)
    if args.copies > 1:  # the pool's images N times over, the validation images once
        pool0 = np.concatenate([pool0 + copy * len(y) for copy in range(args.copies)])
        X, y = np.tile(X, (args.copies, 1)), np.tile(y, args.copies)
    unit = unit_layers(X, [feature_set.layers[layer] for layer in layers])
    rounds = {way: args.rounds for way in WAYS} | {"random": args.random_rounds or 2 * args.rounds - 1}
    sizes = [args.start + r * args.batch for r in range(max(rounds.values()))]
    print(f"{feature_set.uri}: {args.head} on {'+'.join(layers)}, a pool of {len(pool0):,} training images "
          f"{f'({args.copies} copies of each) ' if args.copies > 1 else ''}{f'cut to a {args.tail:g}x tail ' if args.tail else ''}({len(validation):,} validation, {len(yt):,} test); labelled {', '.join(f'{n:,}' for n in sizes[:args.rounds])}"
          f" (random on to {sizes[-1]:,})")
    curves, rarest = {}, {}
    for way in WAYS:
        started = time.perf_counter()
        results = [run(way, X, y, unit, Xt, yt, validation, pool0, classes, args, seed, rounds[way])
                   for seed in range(args.seeds)]
        runs = [accuracies for accuracies, _ in results]
        curves[way] = np.mean(runs, axis=0).tolist()
        rarest[way] = float(np.mean([found[args.rounds - 1] for _, found in results]))  # at the others' last size
        print(f"  {way:<10} " + "  ".join(f"{a:.4f}" for a in curves[way])
              + (f"   {rarest[way]:.0f} of the rarest class labelled at {sizes[args.rounds - 1]:,}" if args.tail else "")
              + f"   (spread at the end {np.std([r[-1] for r in runs], ddof=1) if args.seeds > 1 else 0:.4f}; "
              f"{time.perf_counter() - started:.0f}s)", flush=True)
    for way in WAYS:
        print(json.dumps({"way": way, "dataset": args.dataset, "backbone_version": feature_set.backbone_version,
                          "layers": layers, "head": args.head, "seeds": args.seeds, "copies": args.copies, "tail": args.tail,
                          "measure": "balanced_accuracy" if args.tail else "accuracy", "rarest_labelled": rarest[way], "labelled": sizes[:rounds[way]],
                          "test_accuracy": [round(a, 4) for a in curves[way]],
                          "random_images_for_its_last": (None if way == "random" else
                                                         random_images_for(curves[way][-1], sizes, curves["random"]))}))


if __name__ == "__main__":
    main()
