"""WebDataset samples inside a tar: members ``KEY.jpg`` (or any image suffix) with the
label beside them in ``KEY.cls`` (an integer, as text) or ``KEY.json`` (``label``,
``cls`` or ``class``: an integer or a class name). The key is the member's path up to
the first dot of its file name. The split is given with the source (``#split=NAME``),
or named by the key's first folder (``train/0001.jpg``) or the archive's folder
(``.../train/shard-0001.tar``), else, where a test split is to be held out
(``#holdout=0.2``), ``train``.

An image id is ``split/label/key.ext`` (the split folder dropped from the key)."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from tlfs.pipeline.dataset_index import Entry, Reject
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.base import located
from tlfs.pipeline.sources.hashing import fingerprint_bytes
from tlfs.pipeline.sources.paths import IMAGE_SUFFIXES, SPLIT_NAMES, image_id_of, split_from_path

LABEL_SUFFIXES = (".cls", ".json")
MAX_LABEL_BYTES = 1 << 16


@dataclass
class _Image:
    member: str
    suffix: str
    offset: int
    size: int
    fingerprint: str


def sample_key(name: str) -> tuple[str, str]:
    """``(key, suffix)``: ``a/b/0001.seg.png`` -> ``("a/b/0001", ".seg.png")``."""
    folder, base = posixpath.split(name)
    stem, dot, rest = base.partition(".")
    return posixpath.join(folder, stem), dot + rest


def parse_label(suffix: str, data: bytes, where: str) -> str:
    """The class name (an integer label as text) in a ``.cls`` or ``.json`` member."""
    text = data.decode("utf-8", "replace").strip()
    if suffix == ".cls":
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{where}: .cls holds {text[:40]!r}, not an integer label")
        return str(int(text))
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: .json is not JSON ({exc})") from None
    for key in ("label", "cls", "class"):
        if isinstance(meta, dict) and key in meta and isinstance(meta[key], (int, str)) and str(meta[key]):
            return str(meta[key])
    raise ValueError(f"{where}: .json has no label, cls or class")


class Samples:
    """Collects one archive's samples while it streams past (labels are read as they pass)."""

    def __init__(self, uri: str, options: dict[str, str]) -> None:
        self.uri = uri
        self.split = options.get("split")
        self.holding_out = "holdout" in options  # a test split to be held out of train: train where none is named
        self.images: dict[str, _Image] = {}
        self.labels: dict[str, str] = {}
        self.label_errors: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.images)

    def add(self, name: str, member, read, fingerprint: str | None = None) -> None:
        """``name``: the member's safe path; ``read()``: its bytes (read for a label, hashed for an
        image, unless its ``fingerprint`` was taken already: the stream passes its bytes once)."""
        key, suffix = sample_key(name)
        lower = suffix.lower()
        if posixpath.basename(key).startswith(".") or not posixpath.basename(key):
            return  # hidden files (``._x.jpg`` of macOS archives)
        if lower.count(".") == 1 and lower.endswith(IMAGE_SUFFIXES):  # ``KEY.seg.png`` is another field
            if key not in self.images:
                self.images[key] = _Image(member.name, suffix, *located(member), fingerprint or fingerprint_bytes(read()))
        elif lower in LABEL_SUFFIXES and member.size <= MAX_LABEL_BYTES:
            try:
                self.labels[key] = parse_label(lower, read(), f"{self.uri}:{name}")
            except ValueError as exc:
                self.label_errors[key] = str(exc)

    def entries(self, number: int) -> tuple[list[Entry], list[Reject]]:
        found, bad = [], []
        for key, image in self.images.items():
            split, rest = self._split_of(key)
            label = self.labels.get(key)
            if label is None:
                reason = self.label_errors.get(key, "no label: no KEY.cls or KEY.json beside the image")
                bad.append(Reject(image_id_of((split, "unlabelled", rest + image.suffix)), self.uri, reason))
                continue
            image_id = image_id_of((split, label, rest + image.suffix))
            found.append(Entry(image_id, split, label, number, image.member, image.offset, image.size, image.fingerprint))
        return found, bad

    def _split_of(self, key: str) -> tuple[str, str]:
        first, _, rest = key.partition("/")
        if self.split:
            return self.split, key
        if rest and first.lower() in SPLIT_NAMES:
            return first, rest
        from_path = split_from_path(self.uri)
        if from_path:
            return from_path, key
        if self.holding_out:
            return "train", key
        raise SourceError(f"{self.uri}: WebDataset samples without a split: give it with the source "
                          f"({self.uri}#split=NAME), or keep the archive in a folder named after its split "
                          f"({', '.join(SPLIT_NAMES[:4])}, ...)")
