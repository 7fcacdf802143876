"""Sources on an object store (moto's S3 server on loopback): a folder read with batched
requests, an uncompressed WebDataset tar read by offset."""

import fsspec

from tests.conftest import folder_images, write_tree
from tests.features.conftest import s3_server  # noqa: F401 - the fixture
from tests.pipeline.sources.helpers import renamed, write_webdataset
from tlfs.pipeline.indexing import build_index, iter_payloads
from tlfs.pipeline.sources import folder


def test_a_folder_on_s3_reads_in_batches_and_a_missing_file_is_a_reject_not_a_stop(s3_server, tmp_path, monkeypatch):
    files = folder_images(per_class=3)
    fs = fsspec.filesystem("s3")
    fs.put(str(write_tree(tmp_path / "tree", files)) + "/", "tlfs-test/tree/", recursive=True)
    index = build_index("colors", ["s3://tlfs-test/tree"])
    assert index.sources[0].format == "imagefolder-dir" and len(index.entries) == len(files)
    batches = []
    real = folder.read_files
    monkeypatch.setattr(folder, "read_files", lambda fs, paths: batches.append(len(paths)) or real(fs, paths))
    monkeypatch.setattr(folder, "BATCH", 7)
    fs.rm("tlfs-test/tree/train/red/001.png")
    got = {e.image_id: p for e, p in iter_payloads(index.sources, index.entries)}
    assert batches == [7, 7, 4]  # 18 images, 7 at a time
    from tlfs.pipeline.image_decode import Unreadable

    assert isinstance(got.pop("train/red/001.png"), Unreadable)
    assert got == {i: d for i, d in files.items() if i != "train/red/001.png"}


def test_an_uncompressed_tar_on_s3_is_read_by_ranges_only(s3_server, tmp_path, monkeypatch):
    files = folder_images(per_class=3)
    fsspec.filesystem("s3").put(str(write_webdataset(tmp_path / "train.tar", files)), "tlfs-test/wds/train.tar")
    index = build_index("wds", ["s3://tlfs-test/wds/train.tar"])
    from tlfs.pipeline.sources import tar

    monkeypatch.setattr(tar, "_TarStream", None)  # streaming the archive would fail
    some = index.entries[3:9]
    got = {e.image_id: p for e, p in iter_payloads(index.sources, some)}
    assert got == {renamed(i): d for i, d in files.items() if renamed(i) in got} and len(got) == 6


def test_a_csv_of_labels_on_s3_names_images_on_s3_and_each_is_fingerprinted_by_its_etag(s3_server, tmp_path):
    from tests.pipeline.sources.helpers import flattened, write_labels_csv

    files = folder_images(per_class=2)
    fs = fsspec.filesystem("s3")
    fs.put(str(write_labels_csv(tmp_path / "csv", files).parent) + "/", "tlfs-test/csv/", recursive=True)
    index = build_index("csv", ["s3://tlfs-test/csv/labels.csv"])
    assert index.sources[0].format == "labels-csv" and index.sources[0].options["root"] == "s3://tlfs-test/csv"
    assert all(e.fingerprint.startswith("etag:") for e in index.entries)
    got = {e.image_id: p for e, p in iter_payloads(index.sources, index.entries)}
    assert got == {flattened(i): data for i, data in files.items()}
