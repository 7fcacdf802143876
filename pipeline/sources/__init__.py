"""Dataset sources, one class per format (the interface: pipeline/sources/base.py).

=================  ===================================================  ==================
format             what                                                 module
=================  ===================================================  ==================
imagefolder-dir    a ``split/class/file`` tree in a directory            folder.py
imagefolder-zip    the same tree in a ``.zip``                           zip.py
imagefolder-tar    the same tree in a tar (plain or compressed)          tar.py
webdataset-tar     WebDataset samples (``KEY.jpg`` + ``KEY.cls``)        tar.py, webdataset.py
cifar10-python     the canonical CIFAR-10 python tarball                 cifar.py
parquet-table      a Parquet table of image bytes (Hugging Face)         parquet.py
labels-csv         a CSV of image paths and labels beside the images    labels_csv.py
=================  ===================================================  ==================

A URI may name many files at once (a glob or a brace list: ``shards/train-{0000..0099}.tar``,
``s3://bucket/shards/*.tar``): each file is a source of its own.
"""

from __future__ import annotations

from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.base import Indexed, Source
from tlfs.pipeline.sources.cifar import CifarTarball
from tlfs.pipeline.sources.folder import ImageFolderDir
from tlfs.pipeline.sources.labels_csv import LabelsCsv
from tlfs.pipeline.sources.parquet import ParquetTable
from tlfs.pipeline.sources.tar import OpenArchives, TarArchive
from tlfs.pipeline.sources.zip import ImageFolderZip

SOURCES: dict[str, Source] = {fmt: source for source in (ImageFolderDir(), ImageFolderZip(), TarArchive(),
                                                        CifarTarball(), ParquetTable(), LabelsCsv())
                              for fmt in source.formats}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def source_for(uri: str, fs, path: str) -> Source:
    """The class that indexes ``uri``: by what it is (a directory) or by its suffix."""
    if fs.isdir(path):
        return SOURCES["imagefolder-dir"]
    lower = path.lower()
    if lower.endswith(".zip"):
        return SOURCES["imagefolder-zip"]
    if lower.endswith(TAR_SUFFIXES):
        return SOURCES["imagefolder-tar"]  # image folder, WebDataset or CIFAR: decided from its members
    if lower.endswith(".parquet"):
        return SOURCES["parquet-table"]
    if lower.endswith((".csv", ".tsv")):
        return SOURCES["labels-csv"]
    raise SourceError(f"{uri}: not a directory, {', '.join(TAR_SUFFIXES)}, .zip, .parquet, .csv or .tsv")


__all__ = ["SOURCES", "Indexed", "OpenArchives", "Source", "source_for"]
