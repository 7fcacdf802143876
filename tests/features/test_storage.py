"""The storage primitives every layer writes through (features/storage.py)."""

import hashlib

from tlfs.features.storage import atomic_put_file, atomic_write_bytes, read_json_if_exists, sha256_uri


def test_a_put_file_replaces_the_target_whole_and_leaves_no_temporary_file(tmp_path):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"new" * 100_000)
    target = tmp_path / "out" / "model.onnx"
    atomic_write_bytes(str(target), b"old")
    atomic_put_file(source, str(target))
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_digests_and_optional_json_of_local_paths(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert sha256_uri(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_json_if_exists(str(tmp_path / "absent.json")) is None
    atomic_write_bytes(str(tmp_path / "card.json"), b'{"version": "v"}')
    assert read_json_if_exists(str(tmp_path / "card.json")) == {"version": "v"}


def test_a_write_that_fails_part_way_keeps_the_old_file_and_leaves_no_part_of_the_new(tmp_path, monkeypatch):
    """A full disk (or a quota, a read-only disk) fails a write part-way: the error names the
    file and the reason, the file keeps what it held, and the part written is not left behind
    to hold the space the disk lacks."""
    import errno
    import os

    import pytest

    from tlfs.features import storage
    from tlfs.features.errors import StoreError, WriteFailed

    target = tmp_path / "set" / "_manifest.json"
    atomic_write_bytes(str(target), b'{"version": 1}')

    def fills_up(fs, path, data):
        with open(path, "wb") as f:
            f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(storage, "_write_synced", fills_up)
    with pytest.raises(WriteFailed) as failed:
        atomic_write_bytes(str(target), b'{"version": 2, "rows": 100000}')
    assert str(failed.value) == f"could not write {target}: No space left on device"
    assert isinstance(failed.value, StoreError) and isinstance(failed.value, OSError)  # the CLI's one line; tolerated
    assert target.read_bytes() == b'{"version": 1}'
    assert [p.name for p in target.parent.iterdir()] == ["_manifest.json"]
