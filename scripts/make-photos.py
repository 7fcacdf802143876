#!/usr/bin/env python3
"""Write an image-folder tar of N photo-sized JPEGs for host-side benchmarks:
    .venv/bin/python scripts/make-photos.py 2000 /tmp/photos.tar
then  tlfs bench --host-only --dataset photos --source /tmp/photos.tar --decode-workers 1|2"""

import sys
from pathlib import Path

from tlfs.pipeline.bench import photo_dataset

if len(sys.argv) != 3:
    raise SystemExit(__doc__)
print(photo_dataset(Path(sys.argv[2]), int(sys.argv[1])))
