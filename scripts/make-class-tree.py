#!/usr/bin/env python3
"""Copy images of an image-folder archive (<split>/<class>/<image>) into a folder of class
folders alone (<class>/<image>), as most photo collections are kept, for trying
``#holdout``: each class's images FROM up to FROM+N of the archive's order.
    .venv/bin/python scripts/make-class-tree.py ../shared/data/cifar10/train.tar.gz /tmp/classes 600
    .venv/bin/python scripts/make-class-tree.py ../shared/data/cifar10/train.tar.gz /tmp/classes 60 --from 600
then  tlfs extract --dataset classes --source '/tmp/classes#holdout=0.2'"""

import argparse
import collections
import tarfile
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("archive")
parser.add_argument("out", type=Path)
parser.add_argument("per_class", type=int, help="images to copy of each class")
parser.add_argument("--from", dest="start", type=int, default=0, help="skip each class's first images")
args = parser.parse_args()

seen: collections.Counter = collections.Counter()
copied = 0
with tarfile.open(args.archive) as archive:
    for member in archive:
        parts = member.name.split("/")
        if not member.isfile() or len(parts) < 3:
            continue
        label, name = parts[-2:]
        seen[label] += 1
        if args.start < seen[label] <= args.start + args.per_class:
            (args.out / label).mkdir(parents=True, exist_ok=True)
            (args.out / label / name).write_bytes(archive.extractfile(member).read())
            copied += 1
print(f"{copied} images in {len(seen)} class folders under {args.out}")
