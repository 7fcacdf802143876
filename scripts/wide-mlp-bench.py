"""Which MLP settings for wide multi-layer inputs? (issue 15: the multi-layer head at 87 %)

Reads a committed set once (every layer, every stored view), then fits the multi-layer
MLP (models/heads.py) with each hidden width x epoch count asked for, the way `tlfs fit
--layer all --head mlp` does: a stratified 10 % validation split of the training images,
the other views' rows of the training images as extra rows, test probabilities averaged
over the views. One JSON line per setting: validation and test accuracy, fit seconds.

    .venv/bin/python scripts/wide-mlp-bench.py --store /work/feat/gridstore \\
        --backbone efficientnet_lite0_2x2 --settings 768x4,1024x3,512x5,1024x4,512x7

Session 9 (2-core machine, full CIFAR-10 with the flipped view, 14 layers, 10,240
features) gave the figures in MLP_SETTINGS' comment: 768x4 is models/heads.py's
``wide_layers`` choice (best validation accuracy among the settings of about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tlfs import features
from tlfs.models import heads
from tlfs.models.fit_data import FitData
from tlfs.pipeline.fit import fitting_rows, read_views, validation_split, view_averaged_proba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--backbone", default="efficientnet_lite0_2x2")
    parser.add_argument("--layers", default="all", help="comma-separated layers, or 'all'")
    parser.add_argument("--settings", default="768x4", help="comma-separated HIDDENxEPOCHS, each optionally ending in "
                        "'bf16' (training's products in bfloat16 where the CPU has it), e.g. 768x4,768x8bf16")
    args = parser.parse_args()

    feature_set = features.open_set(args.dataset, args.backbone, store=args.store)
    layers = list(feature_set.layers) if args.layers == "all" else args.layers.split(",")
    views = feature_set.views
    train, test = read_views(feature_set, layers, views)
    fit_idx, val_idx = validation_split(train[views[0]][1])
    block_dims = [feature_set.layers[layer] for layer in layers]
    data = FitData(*fitting_rows(train, fit_idx, val_idx), len(feature_set.classes), block_dims)
    yt = test[views[0]][1]
    del train
    base = heads.mlp_settings(data.width, block_dims)[1]
    print(f"{len(layers)} layers, {data.width} features, views {'+'.join(views)}: {len(data.train)} training rows",
          file=sys.stderr, flush=True)
    for setting in args.settings.split(","):
        bf16 = setting.endswith("bf16")
        hidden, epochs = (int(n) for n in setting.removesuffix("bf16").split("x"))
        settings = {**base, "hidden": hidden, "one_cycle_epochs": epochs, "bf16": bf16}
        started = time.perf_counter()
        head = heads.fit_mlp(data, log=lambda m: print(m, file=sys.stderr, flush=True), settings=settings)
        seconds = time.perf_counter() - started
        proba = view_averaged_proba(head, test)
        print(json.dumps({"hidden": hidden, "epochs": epochs, "compute": head.params["compute"], "features": data.width, "views": views,
                          "validation_accuracy": round(head.val_accuracy * 100, 2),
                          "test_accuracy": round(float((proba.argmax(1) == yt).mean()) * 100, 2),
                          "fit_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
