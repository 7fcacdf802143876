"""WebDataset archives: ``KEY.png`` with ``KEY.cls`` or ``KEY.json``, one source per archive
of a glob, read by offset when uncompressed."""

import io
import tarfile

import pytest

from tests.conftest import folder_images
from tests.pipeline.sources.helpers import renamed, write_webdataset
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.indexing import build_index, iter_payloads
from tlfs.pipeline.errors import SourceError

CLASSES = ["red", "green", "blue"]  # deliberately not sorted: .cls numbers follow this order


def test_samples_with_json_labels_index_with_their_split_folder_and_read_back_by_offset(tmp_path):
    files = folder_images(per_class=3)
    index = build_index("wds", [str(write_webdataset(tmp_path / "all.tar", files))])
    assert index.sources[0].format == "webdataset-tar"
    assert sorted(e.image_id for e in index.entries) == sorted(renamed(i) for i in files)
    assert all(e.offset > 0 and e.size > 0 for e in index.entries)  # an uncompressed tar: read by offset
    payloads = {e.image_id: p for e, p in iter_payloads(index.sources, index.entries[::-1])}
    assert payloads == {renamed(i): data for i, data in files.items()}


def test_int_labels_fix_the_class_order_and_many_archives_are_one_dataset(tmp_path):
    files = folder_images(per_class=4, splits=("train",))
    names = sorted(files)
    (tmp_path / "train").mkdir()
    for part in range(3):
        write_webdataset(tmp_path / "train" / f"shard-{part:04d}.tar.gz", {n: files[n] for n in names[part::3]},
                         label="cls", classes=CLASSES, split_folder=False, mode="w:gz")
    index = build_index("wds", [str(tmp_path / "train" / "shard-{0000..0002}.tar.gz")])
    assert [s.format for s in index.sources] == ["webdataset-tar"] * 3
    assert index.classes == ["0", "1", "2"] and index.splits() == ["train"]  # split from the folder, label k is class k
    assert {e.image_id.split("/")[1] for e in index.entries if "red-" in e.image_id} == {"0"}
    assert {s.compression for s in index.sources} == {"gz"} and all(e.offset > 0 for e in index.entries)  # sliced
    assert len({e.image_id for e, p in iter_payloads(index.sources, index.entries) if isinstance(p, bytes)}) == 12


def test_the_split_is_given_with_the_source_or_the_index_says_how_to_give_it(tmp_path):
    files = folder_images(per_class=2, splits=("train",))
    path = write_webdataset(tmp_path / "shard.tar", files, split_folder=False)
    with pytest.raises(SourceError, match="without a split: give it with the source"):
        build_index("wds", [str(path)])
    assert build_index("wds", [f"{path}#split=val"]).splits() == ["val"]


def test_a_sample_without_a_usable_label_is_rejected_by_name_and_the_rest_are_kept(tmp_path):
    path = tmp_path / "d.tar"
    files = folder_images(per_class=2, splits=("train",))
    write_webdataset(path, files)
    with tarfile.open(path, "a") as archive:
        for name, data in [("train/orphan.png", files["train/red/000.png"]), ("train/bad.png", files["train/red/000.png"]),
                           ("train/bad.cls", b"red")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    index = build_index("wds", [str(path)])
    reasons = {r.image_id: r.reason for r in index.rejects}
    assert "no label" in reasons["train/unlabelled/orphan.png"] and "not an integer label" in reasons["train/unlabelled/bad.png"]
    assert len(index.entries) == 6


def test_a_changed_archive_is_a_clear_reject_not_wrong_bytes(tmp_path):
    path = write_webdataset(tmp_path / "d.tar", folder_images(per_class=2, splits=("train",)))
    index = build_index("wds", [f"{path}"])
    path.write_bytes(path.read_bytes()[:2048])  # truncated after indexing
    payloads = [p for _, p in iter_payloads(index.sources, index.entries)]
    assert any(isinstance(p, Unreadable) and "cut short" in p.reason for p in payloads)
