"""A shard's record: its files as the manifest lists them, made once with the record."""

from tlfs.pipeline.records import ShardFile, ShardRecord


def record(shard: int = 3) -> ShardRecord:
    return ShardRecord(shard, "train", 3, 2, 1, (), {
        "head": ShardFile("layer=head/split=train/part-a.parquet", 2, 100, "ab"),
        "flip/head": ShardFile("view=flip/layer=head/split=train/part-a.parquet", 2, 90, "cd", "head", "flip")})


def test_a_record_carries_the_manifest_rows_of_its_files():
    assert record().manifest_rows == (
        {"layer": "head", "split": "train", "shard": 3, "path": "layer=head/split=train/part-a.parquet",
         "rows": 2, "bytes": 100, "sha256": "ab"},
        {"layer": "head", "split": "train", "shard": 3, "path": "view=flip/layer=head/split=train/part-a.parquet",
         "rows": 2, "bytes": 90, "sha256": "cd", "view": "flip"})


def test_a_renumbered_or_reloaded_record_has_its_own_rows():
    renumbered = record().with_(shard=7)
    assert {row["shard"] for row in renumbered.manifest_rows} == {7}
    reloaded = ShardRecord.from_json(renumbered.to_json())
    assert reloaded == renumbered and reloaded.manifest_rows == renumbered.manifest_rows
    assert "manifest_rows" not in renumbered.to_json() and "manifest_rows" not in repr(renumbered)


def test_a_reused_record_is_renumbered_for_its_new_plan():
    reused = ShardRecord.reused_from(record(0).to_json(), 5)
    assert reused.reused and [row["shard"] for row in reused.manifest_rows] == [5, 5]
