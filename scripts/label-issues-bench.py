"""How well `tlfs label-issues` finds wrong labels: labels of a committed set's training split
flipped on purpose, at random, to another class, then found again by the same out-of-fold
heads and confident learning. Prints, for each head, layer and share flipped, how many of
the flipped labels were found (recall), how many of the labels flagged were flipped ones
(precision; the rest are labels the head doubts without a flip), and the seconds taken.

    python scripts/label-issues-bench.py --dataset cifar10 --layer block15 --head softmax \\
        --flip 0.02 --flip 0.05 [--backbone B] [--store URI] [--folds 5] [--seed 0]

One JSON line a setting at the end. The store's labels are not changed."""

import argparse
import json
import time

import numpy as np

from tlfs.features.reader import open_set
from tlfs.pipeline.label_issues import DEFAULT_FOLDS, label_issue_indices, out_of_fold_proba


def flipped(y: np.ndarray, classes: int, share: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """``y`` with ``share`` of its labels moved to another class (uniformly), and which."""
    chosen = rng.choice(len(y), int(round(share * len(y))), replace=False)
    noisy = y.copy()
    noisy[chosen] = (y[chosen] + rng.integers(1, classes, len(chosen))) % classes
    return noisy, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--store")
    parser.add_argument("--layer", action="append", help="repeat for several layers side by side (default: head)")
    parser.add_argument("--head", default="softmax")
    parser.add_argument("--flip", type=float, action="append", help="share of the labels flipped (repeat; default 0.02)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    layers = args.layer or ["head"]
    feature_set = open_set(args.dataset, args.backbone, args.store)
    X, y, ids = feature_set.matrices(layers, "train")
    classes = len(feature_set.classes)
    block_dims = [feature_set.layers[layer] for layer in layers] if len(layers) > 1 else None
    quiet = lambda *_: None  # noqa: E731
    for share in args.flip or [0.02]:
        noisy, chosen = flipped(y, classes, share, np.random.default_rng(args.seed))
        started = time.perf_counter()
        proba = out_of_fold_proba({"original": (X, noisy, ids)}, classes, args.head, args.folds, block_dims, quiet)
        flagged = label_issue_indices(noisy, proba)
        seconds = time.perf_counter() - started
        found = np.intersect1d(flagged, chosen)
        first = flagged[:len(chosen)]  # as many of the most doubtful as were flipped
        result = {"dataset": args.dataset, "layers": layers, "head": args.head, "images": int(len(y)), "flipped_share": share,
                  "flipped": int(len(chosen)), "flagged": int(len(flagged)), "found": int(len(found)),
                  "recall": round(len(found) / max(len(chosen), 1), 4),
                  "precision": round(len(found) / max(len(flagged), 1), 4),
                  "precision_at_flipped": round(len(np.intersect1d(first, chosen)) / max(len(first), 1), 4),
                  "held_out_accuracy_on_true_labels": round(float((proba.argmax(1) == y).mean()), 4),
                  "seconds": round(seconds, 1)}
        print(f"{'+'.join(layers)} {args.head}, {share:.1%} flipped ({len(chosen)}): found {len(found)} "
              f"(recall {result['recall']:.1%}) among {len(flagged)} flagged (precision {result['precision']:.1%}; "
              f"of the {len(first)} most doubtful {result['precision_at_flipped']:.1%} flipped), {seconds:.1f} s")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
