"""Image paths inside sources: which names are images, their ids (``split/class/file``),
the split a file's path names, and archive member names that cannot escape.

An image-folder tree is ``<split>/<class>/<file>``; given with a split (``URI#split=train``,
or ``URI#holdout=0.2``, whose images are the train split's until a test split is held out of
them: :mod:`tlfs.pipeline.holdout`) it is ``<class>/<file>``, every image of that split.
The functions below take that split as ``split`` (None: the tree names the splits)."""

from __future__ import annotations

import posixpath
from typing import Iterable

from tlfs.pipeline.dataset_index import Reject

# what Pillow reads (JPEG as cameras, Windows and browsers name it; AVIF; JPEG 2000, as microscopes write it;
# a phone's HEIC through pillow-heif's plugin), and DICOM through pydicom (an X-ray's, a CT slice's)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".avif", ".heic", ".heif", ".tif",
                  ".tiff", ".jp2", ".j2k", ".ppm", ".pgm", ".dcm", ".dicom")
# image formats it does not read (cameras' raw files, JPEG XL, vector drawings, NIfTI volumes): named where
# a dataset leaves them out, so that they are converted rather than lost in silence
UNREAD_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".jxl", ".svg",
                   ".nii", ".nii.gz")

SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")


def split_from_path(uri: str) -> str | None:
    """A split named by a file's path: its parent folder (``.../train/0001.tar``) or its
    name's first part, as Hugging Face names tables (``train-00000-of-00004.parquet``)."""
    path = uri.rstrip("/").split("://")[-1]
    parts = path.split("/")
    stem = parts[-1].split(".")[0]
    for candidate in (stem.split("-")[0].split("_")[0], parts[-2] if len(parts) > 1 else ""):
        if candidate.lower() in SPLIT_NAMES:
            return candidate
    return None


def safe_member(name: str) -> str | None:
    """Normalised relative member path, or None when it escapes (``..``, absolute)."""
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm in (".", ""):
        return None
    return norm


def display_path(name: str) -> str:
    """An unsafe member name with its escaping prefix dropped, to name it in a reject."""
    norm = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    while norm.startswith("../"):
        norm = norm[3:]
    return norm


def image_id_of(parts: tuple[str, str, str]) -> str:
    """``split/class/file``; bytes of a name that are not UTF-8 (kept by Python as
    surrogates) are written as ``\\xNN`` so that the id is valid text everywhere."""
    text = "/".join(parts)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


TREE_OPTIONS = ("split", "holdout")


def tree_split(uri: str, options: dict[str, str]) -> str | None:
    """The split of every image of an image-folder tree of ``<class>/<file>``, from the
    source's options: ``split``, or ``train`` where a test split is to be held out of it
    (``holdout``); None for a tree of ``<split>/<class>/<file>``. Other options are an error."""
    other = sorted(set(options) - set(TREE_OPTIONS))
    if other:
        from tlfs.pipeline.errors import SourceError

        raise SourceError(f"{uri}: options {', '.join(other)} do not apply to an image-folder tree "
                          f"(it takes {' and '.join(TREE_OPTIONS)})")
    return given_split(options)


def given_split(options: dict[str, str]) -> str | None:
    """:func:`tree_split` without the check, for a source that may be another format's."""
    return options.get("split") or ("train" if "holdout" in options else None)


def image_path_parts(path: str, split: str | None = None) -> tuple[str, str, str] | None:
    """``split/class/file`` of an image path (``class/file`` where the tree's ``split`` is
    given), or None for something that is not an image at that depth (a README, a folder,
    a deeper tree)."""
    parts = path.split("/")
    if len(parts) != (3 if split is None else 2) or not parts[-1].lower().endswith(IMAGE_SUFFIXES) \
            or parts[-1].startswith("."):
        return None
    return (parts[0], parts[1], parts[2]) if split is None else (split, parts[0], parts[1])


def an_image(path: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    """An image file by its name (one of ``suffixes``), outside hidden files and folders
    (``.x.jpg``, macOS's ``._x.jpg``, ``.git/``), which hold no images of a dataset."""
    parts = path.strip("/").split("/")
    return parts[-1].lower().endswith(suffixes) and not any(part.startswith(".") for part in parts)


def suffixless(path: str) -> bool:
    """A file whose name has no suffix at all (a scanner's ``IM000001``), outside hidden ones."""
    parts = path.strip("/").split("/")
    return "." not in parts[-1] and not any(part.startswith(".") for part in parts)


def left_out(path: str, split: str | None = None) -> bool:
    """An image file the dataset leaves out: not at ``split/class/file`` depth (in a deeper
    folder, or above the classes), or in a format that is not read (:data:`UNREAD_SUFFIXES`)."""
    return (an_image(path) and image_path_parts(path, split) is None) or an_image(path, UNREAD_SUFFIXES)


def unread(path: str) -> bool:
    return path.lower().endswith(UNREAD_SUFFIXES)


def wrapper_folder(paths: Iterable[str], split: str | None = None) -> str | None:
    """The one folder a tree's images are wrapped in, as ``tar czf pets.tar.gz pets`` and
    ``zip -r pets.zip pets`` make them (``pets/train/cats/1.jpg``): where no image lies at
    ``split/class/file`` depth, every image one folder deeper lies under the same first
    folder, and what lies below it looks like a tree: that folder is not a split's, and one of
    those below is (``train/dogs/2024/1.jpg`` is a split's images one folder too deep, not a
    tree wrapped in ``train``). None otherwise. A tree of ``<class>/<file>`` (its ``split``
    given) is wrapped where no image lies at ``class/file`` depth and every image one folder
    deeper lies under the same first folder, not named as a split (``test/cats/1.jpg`` is a
    split's images, a tree of splits given as one of classes)."""
    depth = 3 if split is None else 2
    wrappers, splits = set(), set()
    for path in paths:
        if not an_image(path):
            continue
        parts = path.split("/")
        if len(parts) == depth:
            return None
        if len(parts) == depth + 1:
            wrappers.add(parts[0])
            splits.add(parts[1].lower())
    if len(wrappers) != 1 or (split is None and not splits & set(SPLIT_NAMES)):
        return None
    wrapper = wrappers.pop()
    return None if wrapper.lower() in SPLIT_NAMES else wrapper


def within(path: str, wrapper: str | None) -> str:
    """``path`` below ``wrapper``; as it is where there is no wrapper or it lies outside it."""
    return path[len(wrapper) + 1:] if wrapper and path.startswith(wrapper + "/") else path


def member_image(name: str, wrapper: str | None = None, split: str | None = None) -> tuple[str | None, str | None]:
    """(image id, safe path) of an archive member, below ``wrapper`` where the archive has
    one (:func:`wrapper_folder`): the id is None where the name is not an image at
    ``split/class/file`` depth; the safe path is None where the name escapes (then
    :func:`unsafe` is its reject)."""
    safe = safe_member(name)
    parts = image_path_parts(within(safe or display_path(name), wrapper), split)
    return (image_id_of(parts) if parts else None), safe


def unsafe(image_id: str, uri: str, name: str) -> Reject:
    return Reject(image_id, uri, f"unsafe archive path {name!r}")
