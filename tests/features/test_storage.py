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
