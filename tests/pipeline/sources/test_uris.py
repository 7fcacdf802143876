"""What a source URI can say: checksums and options after ``#``, globs and brace lists."""

import pytest

from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.sources.paths import split_from_path
from tlfs.pipeline.sources.uris import expand_uri, parse_uri


def test_a_fragment_holds_checksums_and_options_and_anything_else_is_refused():
    assert parse_uri("t.parquet#split=train&label=fine_label") == ("t.parquet", {}, {"split": "train", "label": "fine_label"})
    assert parse_uri("c.tar.gz#md5=ABC") == ("c.tar.gz", {"md5": "abc"}, {})
    with pytest.raises(SourceError, match="unknown fragment 'colour=red'"):
        parse_uri("t.parquet#colour=red")


def test_globs_and_brace_lists_name_every_matching_file_in_order(tmp_path):
    for i in range(12):
        (tmp_path / f"train-{i:04d}.tar").write_bytes(b"")
    assert expand_uri(str(tmp_path / "train-*.tar")) == [str(tmp_path / f"train-{i:04d}.tar") for i in range(12)]
    assert expand_uri(str(tmp_path / "train-{0002..0004}.tar")) == [str(tmp_path / f"train-{i:04d}.tar") for i in (2, 3, 4)]
    assert expand_uri(str(tmp_path / "train-{0001,0011}.tar")) == [str(tmp_path / "train-0001.tar"), str(tmp_path / "train-0011.tar")]
    assert expand_uri(str(tmp_path / "one.tar")) == [str(tmp_path / "one.tar")]  # a plain name is left to the source
    with pytest.raises(SourceError, match="matches no file"):
        expand_uri(str(tmp_path / "test-*.tar"))


@pytest.mark.parametrize("uri, split", [
    ("s3://b/shards/train/000.tar", "train"), ("data/validation-00000-of-00002.parquet", "validation"),
    ("data/test.parquet", "test"), ("data/shard-000.tar", None),
])
def test_a_split_can_be_named_by_a_files_folder_or_name(uri, split):
    assert split_from_path(uri) == split
