"""A Parquet table of images, as Hugging Face datasets are published: one row per image.

Columns (each can be named with the source, ``table.parquet#image=img&label=fine_label``):

* ``image``: the encoded bytes, as ``binary`` or as a struct with ``bytes`` (and
  ``path``) fields, as Hugging Face's ``Image`` feature writes it;
* ``label``: an integer (class names from Hugging Face's ``ClassLabel`` in the schema
  metadata, else the integers themselves) or a string;
* ``split`` (``#split_column=``, optional): else the split is given with the source
  (``#split=train``) or named by the file (``train-00000-of-00004.parquet``, or a
  ``train/`` folder);
* ``id`` (``#id=``, optional): the image's name; else the struct's ``path`` where it
  names every image of a split and class apart, else ``<file>-<row>``.

An image id is ``split/label/name``. Rows are read a row group at a time, only the
groups a shard takes, and only the image column.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from typing import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.pipeline.dataset_index import Entry, Reject, SourceInfo
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.sources.base import Indexed, int_class_order, named_column, table_split, unreadable
from tlfs.pipeline.sources.hashing import digest
from tlfs.pipeline.sources.paths import image_id_of

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "cls")


class ParquetTable:
    formats = ("parquet-table",)

    def index(self, uri: str, number: int, options: dict[str, str], cache_dir: str | None,
              expected: dict[str, str]) -> Indexed:
        checksum = digest(uri, cache_dir)
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as f:
            table = pq.ParquetFile(f)
            schema = table.schema_arrow
            image = named_column(uri, schema.names, options.get("image"), IMAGE_COLUMNS, "image")
            label = named_column(uri, schema.names, options.get("label"), LABEL_COLUMNS, "label")
            # where nothing names it and a test split is to be held out of the table: train
            split_column, split = table_split(uri, schema.names, options, "train-00000.parquet")
            id_column = options.get("id")
            if id_column and id_column not in schema.names:
                raise SourceError(f"{uri}: no id column {id_column!r} (columns: {', '.join(schema.names)})")
            names = _class_names(schema, label)
            has_path = pa.types.is_struct(schema.field(image).type) and schema.field(image).type.get_field_index("path") >= 0
            columns = [label] + [c for c in (split_column, id_column) if c] + ([f"{image}.path"] if has_path and not id_column else [])
            rows = []  # (row group, row, label, split, name)
            for group in range(table.num_row_groups):
                part = table.read_row_group(group, columns=columns, use_threads=False)  # features/schema.read_parquet
                labels = part.column(label).to_pylist()
                splits = part.column(split_column).to_pylist() if split_column else [split] * part.num_rows
                if id_column:
                    ids = part.column(id_column).to_pylist()
                elif has_path:
                    ids = part.column(image).combine_chunks().field("path").to_pylist()
                else:
                    ids = [None] * part.num_rows
                rows.extend((group, row, lab, spl, name) for row, (lab, spl, name) in enumerate(zip(labels, splits, ids)))
        stem = posixpath.basename(path).split(".")[0]
        named = [(spl, lab, posixpath.basename(str(name))) for _, _, lab, spl, name in rows if name]
        distinct = len(named) == len(rows) and len(set(named)) == len(named)  # else ids by row
        found, bad = [], []
        for position, (group, row, lab, spl, name) in enumerate(rows):
            member = f"{group}:{row}"
            label_name = names[lab] if names is not None and isinstance(lab, int) and 0 <= lab < len(names) else lab
            file_name = posixpath.basename(str(name)) if distinct else f"{stem}-{position:07d}"
            if label_name is None or spl is None:
                what = "label" if label_name is None else "split"
                bad.append(Reject(image_id_of((str(spl), str(label_name), file_name)), uri, f"row {position} has no {what}"))
                continue
            image_id = image_id_of((str(spl), str(label_name), file_name))
            # the file's digest: a changed table file is extracted again whole (its rows' bytes are not read here)
            found.append(Entry(image_id, str(spl), str(label_name), number, member, fingerprint=f"file:{checksum['sha256'][:24]}"))
        info = SourceInfo(uri, "parquet-table", checksum, len(found), {**options, "image": image, "label": label})
        return Indexed(info, found, bad, names if names is not None else int_class_order(found))

    def payloads(self, info: SourceInfo, wanted: list[Entry], cache_dir: str | None, archives) -> Iterator:
        by_group: dict[int, list[tuple[int, Entry]]] = defaultdict(list)
        for e in wanted:
            group, row = e.member.split(":")
            by_group[int(group)].append((int(row), e))
        image = info.options["image"]
        fs, path = fsspec.core.url_to_fs(info.uri)
        try:
            f = fs.open(path, "rb")
            table = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as exc:
            yield from unreadable(wanted, exc)
            return
        with f:
            for group in sorted(by_group):
                try:
                    column = table.read_row_group(group, columns=[image], use_threads=False).column(0).combine_chunks()
                except (OSError, pa.ArrowException) as exc:
                    yield from unreadable([e for _, e in by_group[group]], exc)
                    continue
                data = column.field("bytes") if pa.types.is_struct(column.type) else column
                has_paths = pa.types.is_struct(column.type) and column.type.get_field_index("path") >= 0
                paths = column.field("path") if has_paths else None
                for row, e in by_group[group]:
                    value = data[row].as_py() if row < len(data) else None
                    yield e, value if value else Unreadable(_no_bytes(info.uri, e.member, paths, row))


def _class_names(schema: pa.Schema, label: str) -> list[str] | None:
    """Hugging Face's ``ClassLabel`` names, from the ``huggingface`` schema metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][label]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) else None
    return [str(n) for n in names] if names else None


def _no_bytes(uri: str, member: str, paths, row: int) -> str:
    """Why a row has no image: where it names only a file (a table saved without its images
    embedded), that file, which is not read: a path in a table is the writing machine's."""
    path = paths[row].as_py() if paths is not None and row < len(paths) else None
    if path:
        return (f"{uri}: row {member} holds no image bytes, only the path {path} (the table refers to its images "
                "instead of holding them: save it with them embedded, or extract the images' folder)")
    return f"{uri}: row {member} holds no image bytes"
