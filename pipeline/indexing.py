"""A dataset from its sources: every source URI indexed by its format's class
(pipeline/sources/), merged into one :class:`DatasetIndex`; and the payloads of any list
of its entries, each read by its own source.

Building the index reads every source once (names, labels, checksums) without keeping
pixels; :func:`iter_payloads` reads them again for the entries a shard needs. Several
sources merge into one dataset; image ids (``split/class/file``) must be unique across
them.
"""

from __future__ import annotations

import itertools
import tarfile
import zipfile
from typing import Iterable, Iterator

import fsspec
import numpy as np
import pyarrow as pa

from tlfs.pipeline.dataset_index import DatasetIndex, Entry, Reject, SourceInfo, sample, select_splits
from tlfs.pipeline.dicom import PREAMBLE, is_dicom
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.holdout import HOLDOUT_HINT, hold_out, holdout_fraction
from tlfs.pipeline.sources import SOURCES, Indexed, OpenArchives, source_for
from tlfs.pipeline.sources.hashing import verify_expected
from tlfs.pipeline.sources.labels_csv import codec_of
from tlfs.pipeline.sources.paths import TREE_OPTIONS, UNREAD_SUFFIXES, unread
from tlfs.pipeline.sources.uris import expand_uri, parse_uri


def build_index(
    name: str,
    uris: Iterable[str],
    splits: Iterable[str] | None = None,
    limit: int | None = None,
    cache_dir: str | None = None,
) -> DatasetIndex:
    """Read every source once and list its images; optionally keep only ``splits`` and a
    class-balanced sample of ``limit`` images per split."""
    uris = list(uris)
    if not uris:
        raise SourceError(f"dataset {name!r} has no source: give --source URI")
    indexed: list[Indexed] = []
    for raw_uri in uris:
        pattern, expected, options = parse_uri(raw_uri)
        files = expand_uri(pattern)
        if expected and len(files) > 1:
            raise SourceError(f"{raw_uri}: a checksum names one file, and this names {len(files)}")
        fraction = holdout_fraction(raw_uri, options["holdout"]) if "holdout" in options else None
        for uri in files:
            found = _index_one(uri, len(indexed), options, expected, cache_dir)
            indexed.append(found if fraction is None else hold_out(found, fraction))
    sources = [i.info for i in indexed]
    entries = [e for i in indexed for e in i.entries]
    _check_unique(entries, sources)
    if not entries:
        raise _no_images(name, uris, [path for i in indexed for path in i.left_out],
                         any(i.info.options.keys() & set(TREE_OPTIONS) for i in indexed),
                         [r for i in indexed for r in i.rejects], [path for i in indexed for path in i.suffixless])
    classes = _classes(indexed, entries)
    index = DatasetIndex(name, sources, classes, entries, [r for i in indexed for r in i.rejects],
                         [path for i in indexed for path in i.left_out], sum(i.repeated_rows for i in indexed))
    if splits:
        index = select_splits(index, list(splits))
    if limit:
        index = sample(index, limit)
    return index


def left_out_notice(index: DatasetIndex, shown: int = 3) -> str:
    """``; 4 image files left out, ...``: the sources' image files that are not in the
    dataset, for their place in the tree or their format (said, never dropped in silence);
    empty where none."""
    formats, placed = _by_format(index.left_out)
    notice = ""
    if placed:
        notice += f"; {_files(placed, 'image file')} left out, not at <split>/<class>/<file>: {_some(placed, shown)}"
    if formats:
        notice += (f"; {_files(formats, 'image file')} left out in formats not read ({_suffixes(formats)}), "
                   f"to be converted to JPEG or PNG: {_some(formats, shown)}")
    return notice


def refused_notice(index: DatasetIndex, shown: int = 3) -> str:
    """``; 1 refused while indexing ...``: the images indexing recorded as rejected without
    reading them (links, unsafe paths), so that the indexed count and the splits' ``read``
    counts, which include them, visibly reconcile; empty where none."""
    if not index.rejects:
        return ""
    return f"; {len(index.rejects)} refused while indexing, recorded as rejected: {rejects_named(index.rejects, shown)}"


def repeated_rows_notice(index: DatasetIndex) -> str:
    """``; 20 rows list an image again ...``: a table's rows that repeat an image with its
    label, which the dataset counts once (not rejects: the image is there); empty where none."""
    if not index.repeated_rows:
        return ""
    rows = "1 row lists" if index.repeated_rows == 1 else f"{index.repeated_rows} rows list"
    return f"; {rows} an image again with the same label (a row a box or an annotation?): each image counted once"


def _files(paths: list[str], what: str) -> str:
    return f"{len(paths)} {what}{'' if len(paths) == 1 else 's'}"


def _by_format(left_out: list[str]) -> tuple[list[str], list[str]]:
    """The image files left out: (those in formats not read, those at another depth)."""
    return [path for path in left_out if unread(path)], [path for path in left_out if not unread(path)]


def rejects_named(rejects: list[Reject], shown: int = 3) -> str:
    """``a.jpg (reason), b.jpg (reason) and 4 more``."""
    return _some([f"{r.image_id} ({r.reason})" for r in rejects], shown)


def _suffixes(paths: list[str]) -> str:
    return ", ".join(sorted({next(suffix for suffix in UNREAD_SUFFIXES if path.lower().endswith(suffix))[1:]
                             for path in paths}))


def _some(paths: list[str], shown: int) -> str:
    more = len(paths) - shown
    return ", ".join(paths[:shown]) + (f" and {more} more" if more > 0 else "")


def splits_notice(index: DatasetIndex) -> str:
    """``; heads need ...``: said at planning where the dataset lacks the splits that fitting
    heads and fine-tuning need, so that the user learns it before the extraction, not after."""
    missing = [split for split in ("train", "test") if split not in index.splits()]
    if not missing:
        return ""
    return (f"; fitting heads and fine-tuning need a train and a test split, and it has no {' or '.join(missing)} "
            f"(an image folder is <split>/<class>/<image>; {HOLDOUT_HINT})")


def alike_classes_notice(index: DatasetIndex) -> str:
    """``; classes told apart that differ only in case, spaces, '_' or '-': 'Cat' (test) and
    'cat' (train) ...``: said at planning, where the splits' folders were named differently
    (names alike that are not in the same splits), since a head counts every test image of a
    class that training lacks as wrong."""
    splits_of: dict[str, set[str]] = {}
    for e in index.entries:
        splits_of.setdefault(e.label_name, set()).add(e.split)
    alike: dict[str, list[str]] = {}
    for name in index.classes:
        alike.setdefault(" ".join(name.casefold().replace("_", " ").replace("-", " ").split()), []).append(name)
    # where each name of a group is in the same splits (EMNIST's 'a' and 'A'), they are meant apart
    groups = [" and ".join(f"{name!r} ({', '.join(sorted(splits_of.get(name, ())))})" for name in names)
              for names in alike.values() if len({frozenset(splits_of.get(name, ())) for name in names}) > 1]
    if not groups:
        return ""
    return (f"; classes told apart that differ only in case, spaces, '_' or '-': {'; '.join(groups[:3])}"
            f"{f' and {len(groups) - 3} more' if len(groups) > 3 else ''} (a class is its folder's or label's exact name: "
            "rename one to merge them)")


def _no_images(name: str, uris: list[str], left_out: list[str], split_given: bool,
               rejects: list[Reject], suffixless: list[str] = ()) -> SourceError:
    """The error of a dataset without images, naming the ones indexing refused (a CSV's rows
    whose files are not there, unsafe archive paths), saying how to lay out the images
    that were seen, and which files without a suffix are DICOM."""
    found = ""
    dicom = [path for path in suffixless if _dicom_file(path)]
    if dicom:
        found += (f"; files without a suffix are DICOM, such as {dicom[0]}: to be named with .dcm "
                  "(images are known by their suffix)")
    if rejects:
        found += f"; {len(rejects)} refused while indexing: {rejects_named(rejects, 3)}"
    formats, placed = _by_format(left_out)
    if formats:
        found += (f"; {_files(formats, 'image file')} in formats not read ({_suffixes(formats)}), such as {formats[0]}: "
                  "to be converted to JPEG or PNG")
    if placed:
        found += (f"; {_files(placed, 'image file')} at other depths, such as {placed[0]}: "
                  "the tree is to be ")
        found += ("<class>/<image> where its split is given (#split=, #holdout=), at the source's top or inside one "
                  "folder; a tree of <split>/<class>/<image> is given without them" if split_given else
                  "<split>/<class>/<image> (train/<class>/<image>, test/<class>/<image>), at the source's top or inside "
                  "one folder; a tree of <class>/<image> is read with a test split held out of it (URI#holdout=0.2) or "
                  "as one split (URI#split=train)")
    tree = "<class>/<image>" if split_given else "<split>/<class>/<image>"
    return SourceError(f"dataset {name!r}: no images found in {', '.join(uris)} (expected {tree}, "
                       f"WebDataset samples, a Parquet table of images or a CSV of labels){found}")


def _dicom_file(path: str) -> bool:
    """Whether the file begins as a DICOM file does (its preamble, then ``DICM``)."""
    try:
        with fsspec.open(path, "rb") as f:
            return is_dicom(f.read(PREAMBLE + 4))
    except OSError:
        return False


def check_sources(name: str, uris: Iterable[str]) -> None:
    """What :func:`build_index` would refuse before reading anything, checked in a moment:
    no source, a fragment it does not know (or a holdout that is no fraction, an encoding
    that is none), a glob that matches nothing, a named file that
    is not there. A run checks this first, so that a mistyped path is told before the
    backbone is exported and the dataset indexed."""
    uris = list(uris)
    if not uris:
        raise SourceError(f"dataset {name!r} has no source: give --source URI")
    for raw_uri in uris:
        pattern, _, options = parse_uri(raw_uri)
        if "holdout" in options:
            holdout_fraction(raw_uri, options["holdout"])
        if "encoding" in options:
            codec_of(raw_uri, options["encoding"])
        files = expand_uri(pattern)  # a pattern that matches nothing is an error
        if len(files) == 1:  # a file named as it is (a brace list's many names are looked up while indexing)
            fs, path = fsspec.core.url_to_fs(files[0])
            if not fs.exists(path):
                raise not_there(files[0], fs, path)


def not_there(uri: str, fs, path: str) -> SourceError:
    """Why ``uri`` is not found: the server's answer or the connection's error where there is
    one (fsspec's HTTP filesystem reports a refused connection, an unknown host and a 404
    alike as not found), else no such file."""
    try:
        fs.info(path)
    except FileNotFoundError as exc:
        cause = exc.__cause__
        status = getattr(cause, "status", None)
        if status:
            return SourceError(f"{uri}: the server answered HTTP {status} {getattr(cause, 'message', '')}".rstrip())
        if cause is not None:
            return SourceError(f"{uri}: cannot be reached ({type(cause).__name__}: {cause})")
    except Exception as exc:  # noqa: BLE001 - named in the error
        return SourceError(f"{uri}: cannot be read ({type(exc).__name__}: {exc})")
    return SourceError(f"{uri}: no such file or directory")


def _index_one(uri: str, number: int, options: dict[str, str], expected: dict[str, str],
               cache_dir: str | None) -> Indexed:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            raise not_there(uri, fs, path)
        found = source_for(uri, fs, path).index(uri, number, options, cache_dir, expected)
    except SourceError:
        raise
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, NotImplementedError, UnicodeDecodeError,
            pa.ArrowException) as exc:  # NotImplementedError: a zip's version; UnicodeDecodeError: a table's metadata
        raise SourceError(f"{uri}: cannot read ({type(exc).__name__}: {exc})") from exc
    verify_expected(uri, found.info, expected)
    return found


def _classes(indexed: list[Indexed], entries: list[Entry]) -> list[str]:
    """The label order: the one a source fixes (CIFAR's meta, integer labels, a Parquet
    schema's class names), which every source must agree with; else the names sorted."""
    fixed: list[str] | None = None
    for i in indexed:
        if i.classes is None:
            continue
        shorter, longer = sorted((fixed or [], i.classes), key=len)
        if longer[: len(shorter)] != shorter:
            raise SourceError(f"{i.info.uri}: its classes ({', '.join(i.classes[:5])}, ...) disagree with another "
                              f"source's ({', '.join((fixed or [])[:5])}, ...)")
        fixed = longer
    names = {e.label_name for e in entries}
    if fixed is None:
        return sorted(names)
    unknown = sorted(names - set(fixed))
    if unknown:
        raise SourceError(f"labels {', '.join(unknown[:5])} are not among the classes a source fixes "
                          f"({', '.join(fixed[:5])}, ...)")
    return fixed


def _check_unique(entries: list[Entry], sources: list[SourceInfo]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        if e.image_id in seen:
            first = sources[seen[e.image_id]].uri
            raise SourceError(f"image {e.image_id} is in two sources: {first} and {sources[e.source].uri}")
        seen[e.image_id] = e.source


def iter_payloads(sources: list[SourceInfo], entries: list[Entry], cache_dir: str | None = None,
                  archives: OpenArchives | None = None) -> Iterator[tuple[Entry, bytes | np.ndarray | Exception]]:
    """Yield ``(entry, payload)`` for ``entries``: each run of entries of one source is
    read by that source, in the source's order (a shard's entries, in the index's order,
    come back in their order). A payload is the image file's bytes, a decoded HxWx3 array (CIFAR),
    or the exception that kept it from being read (recorded as a reject by the caller,
    never lost). ``archives``: compressed archives kept open across calls (a run's
    consecutive shards stream an archive once); without it, the archives this call opens
    are closed at its end."""
    own = archives is None
    archives = OpenArchives() if own else archives
    try:
        for number, run in itertools.groupby(entries, key=lambda e: e.source):
            info = sources[number]
            yield from SOURCES[info.format].payloads(info, list(run), cache_dir, archives)
    finally:
        if own:
            archives.close()
