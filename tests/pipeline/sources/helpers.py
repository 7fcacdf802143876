"""Writers of the other source formats, holding the same images as ``folder_images``."""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_webdataset(path: Path, files: dict[str, bytes], label: str = "json", classes: list[str] | None = None,
                     split_folder: bool = True, mode: str = "w") -> Path:
    """``split/class/file`` images as WebDataset samples: ``split/KEY.png`` (or ``KEY.png``
    without ``split_folder``) with ``KEY.json`` (``{"label": class}``) or ``KEY.cls``
    (the class's number in ``classes``); KEY is ``class-stem`` (see :func:`renamed`)."""
    with tarfile.open(path, mode) as archive:
        for rel, data in files.items():
            split, name, file = rel.split("/")
            stem, ext = posixpath.splitext(file)
            key = f"{split}/{name}-{stem}" if split_folder else f"{name}-{stem}"
            _add(archive, f"{key}{ext}", data)
            if label == "json":
                _add(archive, f"{key}.json", json.dumps({"label": name}).encode())
            else:
                _add(archive, f"{key}.cls", str(classes.index(name)).encode())
    return path


def write_parquet_table(path: Path, files: dict[str, bytes], classes: list[str], row_group_size: int = 5) -> Path:
    """As Hugging Face writes one: an ``image`` struct (bytes, path), an int ``label`` with
    its ``ClassLabel`` names in the schema metadata, and a ``split`` column."""
    rows = [(rel.split("/"), data) for rel, data in files.items()]
    table = pa.table({
        "image": pa.array([{"bytes": data, "path": f"{parts[1]}-{parts[2]}"} for parts, data in rows],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array([classes.index(parts[1]) for parts, _ in rows], pa.int64()),
        "split": pa.array([parts[0] for parts, _ in rows]),
    })
    meta = {"info": {"features": {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"},
                                  "split": {"dtype": "string", "_type": "Value"}}}}
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def renamed(image_id: str) -> str:
    """The id these writers give the image ``split/class/file``: ``split/class/class-file``
    (file names repeat across classes, and a sample's key must not)."""
    split, name, file = image_id.split("/")
    return f"{split}/{name}/{name}-{file}"


def write_labels_csv(folder: Path, files: dict[str, bytes]) -> Path:
    """``split/class/file`` images as one flat folder, ``images/split-class-file``, and a
    ``labels.csv`` beside it naming each (``image,label,split``): the CSV's path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,label,split"]
    for rel, data in files.items():
        split, name, file = rel.split("/")
        (folder / "images" / f"{split}-{name}-{file}").write_bytes(data)
        lines.append(f"images/{split}-{name}-{file},{name},{split}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def flattened(image_id: str) -> str:
    """A ``folder_images`` id as :func:`write_labels_csv`'s CSV names it."""
    split, name, file = image_id.split("/")
    return f"{split}/{name}/{split}-{name}-{file}"
