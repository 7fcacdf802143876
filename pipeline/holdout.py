"""A test split held out of a source that has none (``URI#holdout=0.2``): each of its
training images goes to ``test`` where the hash of its class and file name falls within the
fraction. The choice is the image's own, not a draw over the set, so an image's split never
changes as others are added or removed: an incremental run extracts only the new images,
and every version tests its heads on the images the one before did, plus new ones. The
test split's share of each class is the fraction on average; a class of few images may get
a little more or less (a class of five at 0.2: no test image one time in three)."""

from __future__ import annotations

import dataclasses
import hashlib

from tlfs.pipeline.dataset_index import Entry, Reject
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.base import Indexed

FROM_SPLIT = "train"
TO_SPLIT = "test"
HOLDOUT_HINT = "a source given as URI#holdout=0.2 holds a test split out of its train images"


def holdout_fraction(uri: str, text: str) -> float:
    """The fraction ``#holdout=`` gives, a number strictly between 0 and 1 (``0.2``, ``20%``)."""
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction < 1:
        raise SourceError(f"{uri}: holdout={text} is not a fraction of the images between 0 and 1 "
                          "(holdout=0.2 or holdout=20% holds out a fifth of them as the test split)")
    return fraction


def held_out(image_id: str, fraction: float) -> bool:
    """Whether the image ``split/class/file`` goes to the test split: by the hash of its
    class and file, so the split it came from does not change the choice."""
    digest = hashlib.sha256(image_id.split("/", 1)[1].encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def hold_out(indexed: Indexed, fraction: float) -> Indexed:
    """``indexed`` with ``fraction`` of its training images, and of the rejects among them,
    moved to the test split (their ids' split with them). A source that already has test
    images is an error: which would be meant is not for the index to guess."""
    uri = indexed.info.uri
    if any(e.split == TO_SPLIT for e in indexed.entries) or any(_split(r) == TO_SPLIT for r in indexed.rejects):
        raise SourceError(f"{uri}: holdout holds a test split out of the train split, and this source has a test split "
                          "already: give it without holdout")
    if indexed.entries and not any(e.split == FROM_SPLIT for e in indexed.entries):
        found = sorted({e.split for e in indexed.entries})
        raise SourceError(f"{uri}: holdout holds a test split out of the train split, and this source's images are of "
                          f"{', '.join(found)}")
    return dataclasses.replace(indexed, entries=[_moved_entry(e, fraction) for e in indexed.entries],
                               rejects=[_moved_reject(r, fraction) for r in indexed.rejects])


def _split(reject: Reject) -> str:
    return reject.image_id.split("/", 1)[0]


def _test_id(image_id: str) -> str:
    return f"{TO_SPLIT}/{image_id.split('/', 1)[1]}"


def _moved_entry(entry: Entry, fraction: float) -> Entry:
    if entry.split != FROM_SPLIT or not held_out(entry.image_id, fraction):
        return entry
    return dataclasses.replace(entry, image_id=_test_id(entry.image_id), split=TO_SPLIT)


def _moved_reject(reject: Reject, fraction: float) -> Reject:
    if _split(reject) != FROM_SPLIT or not held_out(reject.image_id, fraction):
        return reject
    return dataclasses.replace(reject, image_id=_test_id(reject.image_id))
