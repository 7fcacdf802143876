"""How many of CIFAR-10's known test-set label errors `tlfs label-issues` finds. The errors
are those of "Pervasive Label Errors in Test Sets" (Northcutt, Athalye and Mueller, 2021):
candidates that fewer than 3 of 5 Mechanical Turk workers gave the dataset's label alone,
54 of the 10,000 test images. Their files come from the public repository
cleanlab/label-errors (`mturk/cifar10_mturk.json` and
`original_test_labels/cifar10_test_set_original_labels.npy`); nothing is downloaded here.

    tlfs label-issues --dataset cifar10 --split test --all --output ranked.csv
    python scripts/cifar10-label-errors.py ranked.csv --mturk cifar10_mturk.json \\
        --labels cifar10_test_set_original_labels.npy

The index of a CIFAR-10 test image (the files' order) is mapped to the image folders'
`test/<class>/<NNNN>.jpg` by its place among its class's images in that order. Prints the
errors flagged (recall), their places in the ranking, and the share of errors among the
first N images ranked; one JSON line at the end."""

import argparse
import json

import numpy as np
import pandas as pd

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WORKERS_FOR_THE_LABEL = 3  # of 5: fewer choosing the given label alone makes it an error, as the paper counts


def image_ids(labels: np.ndarray) -> list[str]:
    """Each test index's image id in the image folders: its class, its place among that class's images."""
    seen = np.zeros(len(CLASSES), int)
    ids = []
    for label in labels:
        ids.append(f"test/{CLASSES[label]}/{seen[label]:04d}.jpg")
        seen[label] += 1
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ranked", help="tlfs label-issues --split test --all --output FILE (csv or parquet)")
    parser.add_argument("--mturk", required=True, help="cifar10_mturk.json of cleanlab/label-errors")
    parser.add_argument("--labels", required=True, help="cifar10_test_set_original_labels.npy of cleanlab/label-errors")
    parser.add_argument("--first", type=int, action="append", help="the first N ranked (repeat; default 54, 100, 200)")
    args = parser.parse_args()
    ids = image_ids(np.load(args.labels))
    candidates = json.load(open(args.mturk))
    errors = {ids[c["id"]] for c in candidates if c["mturk"]["given"] < WORKERS_FOR_THE_LABEL}
    ranked = pd.read_parquet(args.ranked) if args.ranked.endswith(".parquet") else pd.read_csv(args.ranked)
    if len(ranked) != len(ids) or set(ranked["image_id"]) != set(ids):
        raise SystemExit(f"{args.ranked} must rank every CIFAR-10 test image (tlfs label-issues --split test --all)")
    place = {image_id: rank for image_id, rank in zip(ranked["image_id"], ranked["rank"])}
    flagged = set(ranked.loc[ranked["flagged"].astype(bool), "image_id"])
    places = sorted(place[e] for e in errors)
    firsts = args.first or [len(errors), 100, 200]
    in_first = {n: sum(p <= n for p in places) for n in firsts}
    result = {"errors": len(errors), "candidates": len(candidates), "flagged": len(flagged),
              "errors_flagged": len(errors & flagged), "recall": round(len(errors & flagged) / len(errors), 4),
              "precision": round(len(errors & flagged) / max(len(flagged), 1), 4),
              "median_place": float(np.median(places)), "errors_in_first": in_first}
    print(f"{result['errors_flagged']} of the {len(errors)} known label errors flagged (recall {result['recall']:.1%}), "
          f"among {len(flagged)} flagged; their median place in the ranking {result['median_place']:.0f} of {len(ids)}")
    for n, found in in_first.items():
        print(f"  of the first {n} ranked: {found} known errors ({found / n:.1%})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
