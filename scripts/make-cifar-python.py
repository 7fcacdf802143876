#!/usr/bin/env python
"""Write a tarball in the CIFAR-10 python format (``cifar-10-batches-py/``: five data
batches and a test batch of pickled uint8 rows, and ``batches.meta``) from image-folder
tars such as ../shared/data/cifar10/{train,test}.tar.gz, to measure the python-format
source without the internet. Prints the archive's md5, which its URI must name
(``PATH#md5=HEX``: only the official archive's pickles are read without it).

    .venv/bin/python scripts/make-cifar-python.py OUT.tar.gz ../shared/data/cifar10/train.tar.gz ../shared/data/cifar10/test.tar.gz
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(archive_path: str):
    """(split, class, file name, 3072 uint8 values in CIFAR's channel-major order) per image."""
    with tarfile.open(archive_path) as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            split, name, file = parts
            pixels = np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB"), np.uint8)
            yield split, name, file, pixels.transpose(2, 0, 1).reshape(-1)


def batch(rows: list) -> bytes:
    return pickle.dumps({b"data": np.stack([r[3] for r in rows]), b"labels": [CLASSES.index(r[1]) for r in rows],
                         b"filenames": [r[2].encode() for r in rows]})


def main(out: str, *sources: str) -> None:
    rows = [row for source in sources for row in images(source)]
    train, test = [r for r in rows if r[0] == "train"], [r for r in rows if r[0] == "test"]
    members = {"batches.meta": pickle.dumps({b"label_names": [c.encode() for c in CLASSES]})}
    size = -(-len(train) // 5)
    for i in range(5):
        members[f"data_batch_{i + 1}"] = batch(train[i * size:(i + 1) * size])
    members["test_batch"] = batch(test)
    with tarfile.open(out, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    print(f"{out}: {len(train)} train, {len(test)} test images; md5 {hashlib.md5(Path(out).read_bytes()).hexdigest()}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
