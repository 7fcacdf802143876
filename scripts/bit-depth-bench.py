"""What --bit-depth is worth on 12-bit images: CIFAR-10 images made greyscale and stored as a
microscope stores 12-bit ones (0-4095 in a 16-bit PNG), extracted as 16-bit (the default: 16
times darker than their range) and with ``--bit-depth 12``, beside the same images as 8-bit
greyscale PNGs; a softmax head fitted on one layer of each set (tlfs fit), its test accuracy
printed. The first ``--train`` and ``--test`` images a class of each archive, in its order.

    .venv/bin/python scripts/bit-depth-bench.py --source ../shared/data/cifar10/train.tar.gz \\
        --source ../shared/data/cifar10/test.tar.gz [--train 200] [--test 100] [--layer block15]

Everything is written under a temporary folder and removed; one JSON line at the end."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tlfs.features.reader import open_set
from tlfs.pipeline import extract
from tlfs.pipeline.extract import ExtractionRequest, RunOptions
from tlfs.pipeline.fit import fit


def first_images(sources: list[str], per_split: dict[str, int]) -> dict[str, np.ndarray]:
    """``split/class/file`` -> greyscale uint8 pixels: the first images a class of each split."""
    taken: dict[str, np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    for source in sources:
        with tarfile.open(source) as archive:
            for member in archive:
                parts = member.name.split("/")[-3:]
                if not member.isfile() or len(parts) != 3 or parts[0] not in per_split:
                    continue
                key = (parts[0], parts[1])
                if counts.get(key, 0) >= per_split[parts[0]]:
                    continue
                counts[key] = counts.get(key, 0) + 1
                taken["/".join(parts)] = np.asarray(Image.open(archive.extractfile(member)).convert("L"))
    return taken


def write_tree(root: Path, images: dict[str, np.ndarray], bits: int | None) -> Path:
    """Each image as a PNG: 8-bit greyscale (``bits`` None), or ``bits``-bit samples in 16."""
    for name, grey in images.items():
        path = (root / name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = grey if bits is None else np.rint(grey.astype(np.float64) * (2 ** bits - 1) / 255).astype(np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", required=True, help="CIFAR-10's image-folder archives")
    parser.add_argument("--train", type=int, default=200, help="training images a class")
    parser.add_argument("--test", type=int, default=100, help="test images a class")
    parser.add_argument("--layer", default="block15")
    args = parser.parse_args()
    images = first_images(args.source, {"train": args.train, "test": args.test})
    results = {}
    with tempfile.TemporaryDirectory(prefix="tlfs-bit-depth-") as tmp:
        root = Path(tmp)
        runs = {"8-bit greyscale": (write_tree(root / "grey8", images, None), None),
                "12-bit, scaled as 16-bit (no --bit-depth)": (write_tree(root / "grey12", images, 12), None),
                "12-bit, --bit-depth 12": (root / "grey12", 12)}
        for number, (name, (tree, bit_depth)) in enumerate(runs.items()):
            store, started = str(root / f"store{number}"), time.perf_counter()
            request = ExtractionRequest("grey", (str(tree),), "efficientnet_lite0", store, str(root / "models"),
                                        layers=(args.layer,), bit_depth=bit_depth)
            extract.run(request, RunOptions(show_progress=False), log=lambda *_: None)
            head = fit(open_set("grey", "efficientnet_lite0", store=store), [args.layer], "softmax", log=lambda *_: None)
            results[name] = {"test_accuracy": head["test_accuracy"], "seconds": round(time.perf_counter() - started, 1)}
            print(f"{name}: softmax on {args.layer}: test accuracy {head['test_accuracy']:.4f}", flush=True)
    print(json.dumps({"images": len(images), "layer": args.layer, **results}))


if __name__ == "__main__":
    main()
