"""Parquet tables of images, as Hugging Face publishes datasets."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import folder_images, png_bytes
from tests.pipeline.sources.helpers import renamed, write_parquet_table
from tlfs.pipeline.indexing import build_index, iter_payloads
from tlfs.pipeline.errors import SourceError

CLASSES = ["red", "green", "blue"]


def test_a_hugging_face_table_indexes_with_its_class_names_and_reads_only_the_rows_asked(tmp_path):
    files = folder_images(per_class=3)
    index = build_index("hf", [str(write_parquet_table(tmp_path / "t.parquet", files, CLASSES, row_group_size=4))])
    assert index.sources[0].format == "parquet-table" and index.classes == CLASSES  # the schema's order
    assert sorted(e.image_id for e in index.entries) == sorted(renamed(i) for i in files)
    wanted = index.entries[5:11]
    got = {e.image_id: p for e, p in iter_payloads(index.sources, wanted)}
    assert got == {e.image_id: files[e.image_id.split("/")[0] + "/" + e.label_name + "/" + e.image_id.split("-", 1)[1]]
                   for e in wanted}


def test_columns_are_named_with_the_source_and_the_split_by_the_file_name(tmp_path):
    table = pa.table({"img": [png_bytes((200, 0, 0)), png_bytes((0, 0, 200))], "y": ["red", "blue"]})
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    uri = str(tmp_path / "test-00000-of-00001.parquet")
    index = build_index("t", [f"{uri}#image=img&label=y"])
    assert index.splits() == ["test"] and index.classes == ["blue", "red"]
    assert [e.image_id for e in index.entries] == ["test/red/test-00000-of-00001-0000000", "test/blue/test-00000-of-00001-0000001"]
    with pytest.raises(SourceError, match="no label column among img, y"):
        build_index("t", [uri])
    with pytest.raises(SourceError, match="no image column 'picture'"):
        build_index("t", [f"{uri}#image=picture&label=y"])


def test_a_row_without_image_bytes_is_a_reject_with_its_row(tmp_path):
    table = pa.table({"image": [png_bytes((200, 0, 0)), None], "label": ["red", "red"]})
    pq.write_table(table, tmp_path / "train.parquet")
    index = build_index("t", [str(tmp_path / "train.parquet")])
    payloads = [p for _, p in iter_payloads(index.sources, index.entries)]
    assert isinstance(payloads[0], bytes) and "holds no image bytes" in str(payloads[1])


def test_a_row_that_names_only_its_file_says_the_table_refers_to_its_images(tmp_path):
    """A table saved without its images embedded holds their paths on the machine that wrote it."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": png_bytes((200, 0, 0)), "path": None}, {"bytes": None, "path": "/data/cats/1.png"}],
                      image_type)
    pq.write_table(pa.table({"image": images, "label": ["red", "red"]}), tmp_path / "train.parquet")
    index = build_index("t", [str(tmp_path / "train.parquet")])
    payloads = [p for _, p in iter_payloads(index.sources, index.entries)]
    assert isinstance(payloads[0], bytes)
    assert "holds no image bytes, only the path /data/cats/1.png (the table refers to its images" in str(payloads[1])
