"""A CSV file of labels beside a folder of images, as Kaggle and many teams keep a dataset:
one row an image, its file's path and its label (``train.csv`` with ``id_code,diagnosis``
and a ``train_images/`` folder).

Columns (each can be named with the source, ``labels.csv#image=id_code&label=diagnosis``):

* ``image``: the image file's path, relative to the folder of images (``#root=URI``, itself
  relative to the CSV's folder unless absolute; default: the CSV's own folder);
  ``#suffix=.png`` is added to names without an image suffix (Kaggle's ids);
* ``label``: a class name or an integer (integers are their own class order);
* ``split`` (``#split_column=``, optional): else the split is given with the source
  (``#split=train``), named by the file (``train.csv``), or held out (``#holdout=0.2``).

Comma-, semicolon- or tab-separated, as the header line shows (``.csv`` or ``.tsv``); UTF-8,
or the encoding given with the source (``#encoding=cp1252``, as Excel saves a CSV on Windows).
An image id is ``split/label/name``, the name the file's (its path within the root where
file names repeat within a class). A row whose file is not there, a row without a label and
an image listed again with another label are rejects, each with its reason; an image listed
again with its label (a row a box, as detection datasets keep their labels) is counted once. The CSV's checksum is the source's;
each image's size and modification time (or ETag) are its own, so an incremental run
extracts only images that changed. Files are read in batches, as a folder's are.
"""

from __future__ import annotations

import io
import posixpath
from typing import Iterator

import fsspec

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.base import Indexed, int_class_order, named_column, table_split
from tlfs.pipeline.sources.folder import files_in_batches
from tlfs.pipeline.sources.hashing import digest, fingerprint_info
from tlfs.pipeline.sources.paths import IMAGE_SUFFIXES, display_path, image_id_of, safe_member
from tlfs.pipeline.sources.reading import batch_reader

IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "image_id", "id_code", "id", "name")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "diagnosis", "cls")
OPTIONS = ("image", "label", "split", "split_column", "root", "suffix", "holdout", "encoding")


class LabelsCsv:
    formats = ("labels-csv",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        import pandas as pd

        other = sorted(set(options) - set(OPTIONS))
        if other:
            raise SourceError(f"{uri}: options {', '.join(other)} do not apply to a CSV of labels (it takes "
                              f"{', '.join(OPTIONS)})")
        checksum = digest(uri, cache_dir)
        with fsspec.open(uri, "rb") as f:
            text = decoded(uri, f.read(), options.get("encoding"))
        try:
            table = pd.read_csv(io.StringIO(text), sep=delimiter(text), dtype=str, keep_default_na=False,
                                skipinitialspace=True)
        except (ValueError, pd.errors.ParserError) as exc:  # empty, rows of another width
            raise SourceError(f"{uri}: not a CSV of labels ({type(exc).__name__}: {str(exc).strip()})") from exc
        columns = list(table.columns)
        image = named_column(uri, columns, options.get("image"), IMAGE_COLUMNS, "image")
        label = named_column(uri, columns, options.get("label"), LABEL_COLUMNS, "label")
        split_column, split = table_split(uri, columns, options, "train.csv")
        root = _root(uri, options.get("root"))
        suffix = options.get("suffix", "")
        fs, root_path = batch_reader(root)
        files = {path.rstrip("/"): info for path, info in fs.find(root_path, withdirs=False, detail=True).items()}
        rows = []  # (row number, split, label, relative path)
        for number_in_table, (name, lab, spl) in enumerate(zip(
                table[image], table[label], table[split_column] if split_column else [split] * len(table)), start=2):
            name = name.strip()
            if name and suffix and not name.lower().endswith(IMAGE_SUFFIXES):
                name += suffix
            rows.append((number_in_table, spl.strip(), lab.strip(), name))
        # a file's own name where it tells every image of its split and class apart, else its path
        names = [(spl, lab, posixpath.basename(rel)) for _, spl, lab, rel in rows]
        listed = {(spl, lab, rel) for _, spl, lab, rel in rows}  # a row listed twice is a reject, not a clash
        by_name = len({(spl, lab, posixpath.basename(rel)) for spl, lab, rel in listed}) == len(listed)
        found, bad, first = [], [], {}  # first: each file's first row (line, split, label)
        repeated = 0
        for (line, spl, lab, given), short in zip(rows, names):
            rel = safe_member(given) if given else None  # within the root: never ../ or an absolute path
            image_id = image_id_of((spl or "?", lab or "?", short[2] if by_name else (rel or display_path(given))))
            full = f"{root_path.rstrip('/')}/{rel}"
            if not given:
                bad.append(Reject(image_id, uri, f"line {line} names no image"))
            elif rel is None:
                bad.append(Reject(image_id, uri, f"line {line}: {given} is not a path within {root}"))
            elif not lab or not spl:
                bad.append(Reject(image_id, uri, f"line {line} ({rel}) has no {'label' if not lab else 'split'}"))
            elif full in first and first[full][1:] == (spl, lab):  # the same fact again (a row a box): one image
                repeated += 1
            elif full in first:  # named apart from the image it repeats, which is in the dataset with its first label
                then, was_split, was_label = first[full]
                bad.append(Reject(f"{image_id} (line {line})", uri,
                                  f"line {line} lists {rel} again as {spl}/{lab}, line {then} as {was_split}/{was_label}: "
                                  "an image has one label, and the first row's is kept"))
            elif full not in files:
                bad.append(Reject(image_id, uri, f"line {line}: no file {root}/{rel}"))
            else:
                first[full] = (line, spl, lab)
                found.append(Entry(image_id, spl, lab, number, full, fingerprint=fingerprint_info(files[full])))
        info = SourceInfo(uri, "labels-csv", checksum, len(found),
                          {**options, "image": image, "label": label, "root": root})
        return Indexed(info, found, bad, int_class_order(found), repeated_rows=repeated)

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        return files_in_batches(info.options["root"], wanted)


def decoded(uri: str, data: bytes, encoding: str | None) -> str:
    """The CSV's text: UTF-8 (a byte-order mark, as Excel writes, dropped), or the encoding
    given with the source (``#encoding=cp1252``); never guessed, so that no class name is
    misread in silence."""
    codec = codec_of(uri, encoding)
    try:
        return data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        hint = ("a spreadsheet saved it in its own encoding: give that with the source (labels.csv#encoding=cp1252 "
                "for Excel's 'CSV (Comma delimited)' on Windows), or save it as 'CSV UTF-8'" if not encoding else
                "give the file's own encoding with #encoding=")
        raise SourceError(f"{uri}: line {line} is not {'UTF-8' if codec == 'utf-8' else codec} text (byte 0x{data[exc.start]:02x}): {hint}") from None


def codec_of(uri: str, encoding: str | None) -> str:
    """The codec an ``#encoding=`` names (UTF-8 where none is given), checked before anything
    is read."""
    import codecs

    try:
        return codecs.lookup(encoding or "utf-8").name
    except LookupError:
        raise SourceError(f"{uri}: unknown encoding {encoding!r} (#encoding=cp1252, latin-1, utf-16, ...)") from None


def delimiter(text: str) -> str:
    """The CSV's delimiter, as its header line shows it: a comma, else a semicolon (a
    spreadsheet's CSV where the comma is the decimal mark), else a tab (a ``.tsv``); only
    the header is read for it, so no path or label in the rows can mislead it."""
    header = text.split("\n", 1)[0]
    for candidate in (",", ";", "\t"):
        if candidate in header:
            return candidate
    return ","


def _root(uri: str, given: str | None) -> str:
    """The folder the CSV's paths are relative to: ``given`` (a relative one within the CSV's
    folder, as the CSV's own paths are), or the CSV's folder."""
    folder = posixpath.dirname(uri) or "."
    if not given:
        return folder.rstrip("/") or "/"
    if "://" in given or given.startswith("/"):
        return given.rstrip("/") or "/"
    return posixpath.normpath(posixpath.join(folder, given)) if "://" not in folder else f"{folder.rstrip('/')}/{given}".rstrip("/")
