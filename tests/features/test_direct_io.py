"""Large files written past the page cache where the filesystem takes it (features/direct_io.py),
and the usual way where it does not: either way the file holds exactly the bytes given."""

import errno
import os

import numpy as np
import pytest

from tlfs.features import direct_io
from tlfs.features.errors import WriteFailed
from tlfs.features.storage import atomic_write_bytes

SIZES = [direct_io.MIN_BYTES, direct_io.MIN_BYTES + 1, 300 * direct_io.BLOCK + 4095, 3 * direct_io.MIN_BYTES - 1]


def _takes_direct_io(folder) -> bool:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | flag, 0o644))
    except OSError:
        return False
    finally:
        (folder / "probe").unlink(missing_ok=True)
    return True


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned buffer", "bytes"])
def test_a_large_file_is_written_past_the_cache_and_holds_exactly_the_bytes_given(tmp_path, size, aligned):
    if not _takes_direct_io(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not take direct I/O (O_DIRECT)")
    data = np.random.default_rng(size).bytes(size)
    if aligned:
        buffer = direct_io.aligned_buffer(size)
        assert buffer.address % direct_io.BLOCK == 0
        np.frombuffer(buffer, np.uint8)[:] = np.frombuffer(data, np.uint8)
    target = tmp_path / "part-00000.parquet"
    assert direct_io.write_synced(str(target), buffer if aligned else data)
    assert target.read_bytes() == data


def test_a_small_file_is_left_to_the_usual_write(tmp_path):
    target = tmp_path / "_manifest.json"
    assert not direct_io.write_synced(str(target), b"{}" * 100)
    assert not target.exists()


def test_a_filesystem_that_refuses_direct_io_gets_the_file_the_usual_way(tmp_path, monkeypatch):
    """tmpfs before Linux 6.6 and some FUSE filesystems refuse O_DIRECT when the file is opened; a
    device with larger blocks refuses the first write. Either way the file is written whole."""
    data = np.random.default_rng(1).bytes(2 * direct_io.MIN_BYTES + 5)
    real_open, real_write = os.open, os.write

    def refusing_open(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    assert not direct_io.write_synced(str(tmp_path / "refused-at-open"), data)
    atomic_write_bytes(str(tmp_path / "a.parquet"), data)
    assert (tmp_path / "a.parquet").read_bytes() == data
    monkeypatch.setattr(os, "open", real_open)

    def refusing_write(descriptor, view):
        import fcntl

        if fcntl.fcntl(descriptor, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_write(descriptor, view)

    monkeypatch.setattr(os, "write", refusing_write)
    atomic_write_bytes(str(tmp_path / "b.parquet"), data)
    assert (tmp_path / "b.parquet").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]


def test_a_full_disk_during_a_direct_write_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    if not _takes_direct_io(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not take direct I/O (O_DIRECT)")
    target = tmp_path / "layer=head" / "part-00000.parquet"
    real_write = os.write

    def fills_up(descriptor, view):
        real_write(descriptor, view[: direct_io.BLOCK])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(WriteFailed) as failed:
        atomic_write_bytes(str(target), np.random.default_rng(2).bytes(direct_io.MIN_BYTES))
    assert str(failed.value) == f"could not write {target}: No space left on device"
    assert list(target.parent.iterdir()) == []  # nor was the file written again the usual way
