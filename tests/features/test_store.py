import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.errors import StoreError
from tlfs.features.manifest import commit
from tlfs.features.schema import features_matrix, shard_table
from tlfs.features.writer import write_shard


def make_set(tmp_path, rows=4, dim=3, split="train", layer="l1", plan="p" * 16, codec="lz4"):
    store = str(tmp_path / "store")
    root = layout.set_uri(store, "ds", "bb-1234")
    matrix = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
    written = write_shard(layout.shard_uri(root, layer, split, plan, 0),
                          shard_table([f"{split}/a/{i}.png" for i in range(rows)], np.zeros(rows), ["a"] * rows, matrix),
                          codec)
    manifest = {
        "dataset": "ds", "backbone": "bb", "backbone_version": "bb-1234", "plan_id": plan,
        "layers": {layer: dim}, "splits": [split], "classes": ["a"], "rows": rows,
        "counts": {split: {"read": rows, "written": rows, "rejected": 0}},
        "shards": [{"layer": layer, "split": split, "shard": 0, "path": written.uri[len(root) + 1:],
                    "rows": rows, "bytes": written.bytes, "sha256": written.sha256}],
        "rejects": [], "lineage": {},
    }
    return store, root, manifest, matrix


def test_nothing_is_visible_before_the_commit_and_everything_after(tmp_path):
    store, root, manifest, matrix = make_set(tmp_path)
    assert features.list_sets(store).empty
    with pytest.raises(features.NotCommitted):
        features.load("ds", "bb", "l1", "train", store)
    commit(root, manifest)
    listed = features.list_sets(store)
    assert listed.loc[0, "rows"] == 4 and listed.loc[0, "layers"] == ["l1"]
    X, y, ids = features.load_matrix("ds", "bb", "l1", "train", store)
    np.testing.assert_array_equal(X, matrix)
    assert ids[0] == "train/a/0.png"


def test_commit_refuses_missing_or_resized_shards_and_bad_counts(tmp_path):
    store, root, manifest, _ = make_set(tmp_path)
    bad_counts = json.loads(json.dumps(manifest))
    bad_counts["counts"]["train"]["written"] = 3
    with pytest.raises(StoreError, match="read 4 != written 3"):
        commit(root, bad_counts)
    shard = tmp_path / "store" / "ds" / "bb-1234" / manifest["shards"][0]["path"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-1])
    with pytest.raises(StoreError, match=f"size {len(data) - 1} != {len(data)}"):
        commit(root, manifest)
    shard.unlink()
    with pytest.raises(StoreError, match="missing"):
        commit(root, manifest)
    assert features.list_sets(store).empty


def test_a_commit_takes_the_committed_files_at_their_listed_size_and_checks_every_new_one(tmp_path):
    """A committed file found in place was checked by its own commit: the next commit's
    listing takes the size the manifest lists (no stat per file of the set; ``tlfs
    verify`` reads every byte). A file the newest manifest does not list is sized on disk."""
    from tlfs.features import versions
    from tlfs.features.manifest import read_manifest

    store, root, manifest, _ = make_set(tmp_path)
    commit(root, manifest)
    committed = read_manifest(root)
    shard = Path(root) / manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes() + b"appended after its commit")
    relative, listed_bytes = manifest["shards"][0]["path"], manifest["shards"][0]["bytes"]
    assert versions.Listing(root, committed).placed[relative] == listed_bytes
    assert versions.Listing(root).placed[relative] == shard.stat().st_size != listed_bytes
    other = {**committed, "shards": []}  # a newest version that does not list the file: looked up when asked for
    assert versions.Listing(root, other).locate(relative).bytes == shard.stat().st_size


def test_a_commit_lists_what_it_adds_and_takes_the_layer_folders_from_the_newest_manifest(tmp_path):
    """The layer= folders hold the newest version's files, so a commit does not list them
    (its time would grow with the set): the manifest says what is there. They are listed
    where that may not hold: a commit stopped after moving its files in but before its
    commit point (a version file beyond the newest), or a set whose manifest carries no
    index. A listed file staged again (a repair) is looked for in place, as is one the
    index retired that is not in ``_retired/`` (a commit stopped before moving it out)."""
    import shutil

    from tlfs.features import versions
    from tlfs.features.manifest import read_manifest

    plan = "ab" * 8  # hex, as a plan id is: a staged file names its plan
    store, root, manifest, _ = make_set(tmp_path, plan=plan)
    commit(root, manifest)
    committed = read_manifest(root)
    relative = manifest["shards"][0]["path"]
    stray = Path(root) / relative.replace(plan[:8], "cd" * 4)  # in place, listed by no manifest
    shutil.copy(Path(root) / relative, stray)
    listing = versions.Listing(root, committed)
    assert listing.placed_from_manifest and set(listing.placed) == {relative}
    assert listing.settled  # the folders hold exactly what the manifest lists: no settle
    assert listing.locate(stray.relative_to(root).as_posix()).bytes == stray.stat().st_size  # a new file is found
    assert not listing.settled  # one more file in place than the manifest lists
    Path(layout.version_uri(root, versions.number_of(committed) + 1)).write_text("{}")
    stopped = versions.Listing(root, committed)  # a commit stopped past its moves: the folders are listed
    assert not stopped.placed_from_manifest and stray.relative_to(root).as_posix() in stopped.placed
    legacy = {k: v for k, v in committed.items() if k != versions.INDEX}
    assert not versions.Listing(root, legacy).placed_from_manifest
    Path(layout.version_uri(root, versions.number_of(committed) + 1)).unlink()
    stray.unlink()
    restaged = Path(layout.staged_uri(root, plan, relative))  # a repair: the damaged file removed, staged again
    restaged.parent.mkdir(parents=True)
    shutil.move(Path(root) / relative, restaged)
    repaired = versions.Listing(root, committed)
    assert relative not in repaired.placed and repaired.locate(relative).uri == str(restaged)
    assert not repaired.settled  # the manifest's file is staged, to be moved in
    index = versions.VersionIndex({}, (), {stray.relative_to(root).as_posix(): 1})
    shutil.copy(restaged, stray)  # retired by the index, never moved out
    left = versions.Listing(root, {**committed, versions.INDEX: index.to_json()})
    assert left.placed_from_manifest and left.placed[stray.relative_to(root).as_posix()] == stray.stat().st_size
    assert not left.settled  # a retired file still in place, to be moved out


def test_the_newest_manifest_is_parsed_again_only_where_its_bytes_changed(tmp_path):
    """A commit may take the manifest its run's planning read, but only while the file
    holds exactly those bytes: another commit in between is read anew."""
    from tlfs.features import versions
    from tlfs.features.manifest import read_manifest

    store, root, manifest, _ = make_set(tmp_path)
    assert versions.read_newest(root) is None  # nothing committed yet
    commit(root, manifest)
    planned = versions.read_newest(root)
    assert planned.manifest == read_manifest(root)
    assert versions.read_newest(root, known=planned) is planned
    assert versions.Listing.with_newest(root, known=planned).newest is planned.manifest
    commit(root, {**manifest, "classes": ["a", "b"]})  # another version, committed meanwhile
    later = versions.read_newest(root, known=planned)
    assert later is not planned and later.manifest == read_manifest(root) and later.manifest["classes"] == ["a", "b"]
    assert versions.Listing.with_newest(root, known=planned).newest == later.manifest


def test_commit_trusts_the_writers_sha256_and_reads_no_file_while_verify_reads_every_byte(tmp_path, monkeypatch):
    from tlfs.features import manifest as manifest_module
    from tlfs.features import storage

    store, root, manifest, _ = make_set(tmp_path)
    shard = tmp_path / "store" / "ds" / "bb-1234" / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes: only a full read can tell
    shard.write_bytes(bytes(data))
    opened = []
    real_open = type(fsspec_local()).open
    monkeypatch.setattr(type(fsspec_local()), "open",
                        lambda self, path, mode="rb", **kw: (opened.append(path) if path.endswith(".parquet") else None)
                        or real_open(self, path, mode, **kw))
    commit(root, manifest)
    assert opened == []  # no shard file was opened by the commit
    bad = manifest_module.damaged_shards(root, features.open_set("ds", "bb", store=store).manifest)
    assert [b["reason"] for b in bad] == ["sha256 mismatch"] and opened  # verify read it
    assert storage.sha256_uri(str(shard)) != manifest["shards"][0]["sha256"]


def fsspec_local():
    import fsspec

    return fsspec.filesystem("file")


def test_writes_are_atomic_no_temporary_files_remain(tmp_path):
    store, root, manifest, _ = make_set(tmp_path)
    commit(root, manifest)
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_feature_column_is_fixed_size_float16_and_reads_without_row_objects(tmp_path):
    table = shard_table(["x", "y"], np.array([0, 1]), ["a", "b"], np.ones((2, 5), np.float32))
    assert str(table.schema.field("features").type) == "fixed_size_list<item: halffloat>[5]"
    assert features_matrix(table.column("features")).shape == (2, 5)


@pytest.mark.parametrize("width", [16, 1280])
def test_a_shard_file_is_the_same_bytes_whether_its_features_come_as_one_matrix_or_as_its_batches(width):
    """The writer hands the encoder a shard's batches as they are (features/schema.table_of):
    the file must not depend on it, or a rerun's files would differ from the first run's."""
    from tlfs.features.writer import encode_shard

    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((2500, width), dtype=np.float32).astype(np.float16)
    ids, labels, names = [f"train/a/{i}.png" for i in range(2500)], np.arange(2500) % 10, ["a"] * 2500
    whole = encode_shard(shard_table(ids, labels, names, matrix))
    batches = encode_shard(shard_table(ids, labels, names, [matrix[i:i + 64] for i in range(0, 2500, 64)]))
    assert batches.sha256 == whole.sha256 and batches.bytes == whole.bytes


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("rows, width", [(1, 1), (2500, 1280), (3000, 40)])
def test_a_shard_is_encoded_in_place_for_direct_io_and_is_the_same_file_as_from_a_growing_buffer(
        rows, width, codec, monkeypatch):
    """The encoder writes a shard's file straight into memory aligned for direct I/O
    (features/direct_io.py), with room enough whatever the codec (uncompressed files are the
    largest); a file that outgrows that room is encoded again into a buffer that grows. The
    bytes are Parquet's either way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tlfs.features import direct_io, writer
    from tlfs.features.schema import write_options

    rng = np.random.default_rng(rows)
    table = shard_table([f"train/a/{i}.png" for i in range(rows)], np.arange(rows) % 10, ["a"] * rows,
                        rng.standard_normal((rows, width)).astype(np.float16))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options(codec))
    expected = sink.getvalue()
    assert writer._encoded_in_place(table, writer.encoder_pool(), write_options(codec)) is not None
    in_place = writer.encode_shard(table, codec)
    assert in_place.data.address % direct_io.BLOCK == 0
    assert in_place.data.equals(expected) and in_place.bytes == expected.size

    monkeypatch.setattr(writer, "ROOM_FOR_FOOTER", -table.nbytes)  # far too little room
    assert writer._encoded_in_place(table, writer.encoder_pool(), write_options(codec)) is None
    grown = writer.encode_shard(table, codec)
    assert grown.data.equals(expected) and grown.sha256 == in_place.sha256


def test_the_encoder_takes_its_memory_from_jemalloc_unless_the_operator_chose_arrows_pool(monkeypatch):
    """mimalloc (Arrow's default) gives each shard's pages back and faults them in again; the
    writer takes jemalloc where pyarrow has it, and the file is the same bytes from either pool."""
    import pyarrow as pa

    from tlfs.features.writer import encode_shard, encoder_pool

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    try:
        jemalloc = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it (its Windows wheels): Arrow's default pool
        assert encoder_pool().backend_name == pa.default_memory_pool().backend_name
        return
    assert encoder_pool().backend_name == "jemalloc"
    table = shard_table([f"train/a/{i}.png" for i in range(500)], np.zeros(500), ["a"] * 500,
                        np.random.default_rng(5).standard_normal((500, 320)).astype(np.float16))
    held_before = jemalloc.bytes_allocated()
    from_jemalloc = encode_shard(table)
    assert jemalloc.bytes_allocated() - held_before >= from_jemalloc.bytes, "the file's bytes are held in jemalloc"

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")  # the operator's choice, read by Arrow at start
    assert encoder_pool().backend_name == pa.default_memory_pool().backend_name
    assert encode_shard(table).sha256 == from_jemalloc.sha256


def test_pandas_reads_a_layer_folder_directly(tmp_path):
    store, root, manifest, _ = make_set(tmp_path)
    commit(root, manifest)
    frame = pd.read_parquet(f"{root}/layer=l1")
    assert list(frame.columns) == ["image_id", "label", "label_name", "features", "split"] and len(frame) == 4


def test_bad_names_and_unknown_layers_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="invalid dataset name"):
        layout.set_uri("s", "../etc", "v")
    for name in ("Ünïcode", "-x", ".hidden"):  # the rule is said as it is: ASCII, and how a name begins
        with pytest.raises(StoreError, match=r"use ASCII letters, .* beginning with a letter or a digit"):
            layout.set_uri("s", name, "v")
    store, root, manifest, _ = make_set(tmp_path)
    commit(root, manifest)
    with pytest.raises(StoreError, match="layer 'l9' is not in"):
        features.load("ds", "bb", "l9", "train", store)


def test_a_commit_applies_the_retention_from_its_index_reading_no_older_version(tmp_path, monkeypatch):
    """Each manifest carries what a commit needs of the history (features/versions.VersionIndex):
    the next commit drops versions and deletes retired files without reading the older
    versions' files, whose number grows with every run (a set committed before the index
    is read once, and indexed from then on)."""
    from tlfs.features import versions
    from tlfs.features.manifest import read_manifest

    made = {}

    def commit_plan(plan: str, retention=versions.Retention()) -> str:
        _, root, made[plan], _ = make_set(tmp_path, plan=plan)  # its file written, then committed
        commit(root, made[plan], retention)
        return root

    root = commit_plan("a" * 16)
    legacy = read_manifest(root)
    del legacy[versions.INDEX]  # as a commit before the index wrote it
    (Path(root) / layout.MANIFEST).write_text(json.dumps(legacy))
    commit_plan("b" * 16)  # reads the history once
    retired_a = Path(root) / layout.RETIRED / made["a" * 16]["shards"][0]["path"]
    assert retired_a.exists()
    assert read_manifest(root)[versions.INDEX]["retired_after"] == {made["a" * 16]["shards"][0]["path"]: 1}

    def no_history(*_, **__):
        raise AssertionError("a commit read the set's history")

    monkeypatch.setattr(versions, "history", no_history)
    commit_plan("c" * 16, versions.Retention(versions=2, days=None))
    assert read_manifest(root)[versions.INDEX] == {
        "live": [[2, json.loads((Path(root) / layout.version_name(2)).read_text())["committed_at"]]], "dropping": [1],
        "retired_after": {made["a" * 16]["shards"][0]["path"]: 1, made["b" * 16]["shards"][0]["path"]: 2}}
    assert not retired_a.exists(), "a file only a dropped version listed was kept"
    assert json.loads((Path(root) / layout.version_name(1)).read_text())["vacuumed_at"]
    retired_b = Path(root) / layout.RETIRED / made["b" * 16]["shards"][0]["path"]
    assert retired_b.exists(), "a file a kept version lists was deleted"
    commit_plan("d" * 16, versions.Retention(versions=1, days=None))
    assert not retired_b.exists() and json.loads((Path(root) / layout.version_name(2)).read_text())["vacuumed_at"]
    assert read_manifest(root)[versions.INDEX]["live"] == [] and features.load("ds", "bb", "l1", "train", str(tmp_path / "store")) is not None
