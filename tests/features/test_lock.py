"""The commit lock: one committer per feature set, locally and on an object store; a
crashed holder never blocks the set for good."""

import json
import threading
import time

import pytest

from tlfs.features.errors import StoreError
from tlfs.features.lock import LOCK_NAME, commit_lock
from tests.features.conftest import CountingClock


def holds_exclusively(set_root: str, clock: CountingClock) -> None:
    order, crashed = [], []

    def second() -> None:
        try:
            with commit_lock(set_root, timeout=600, poll=0.01):
                order.append("second")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            crashed.append(exc)

    with commit_lock(set_root):
        thread = threading.Thread(target=second)
        thread.start()
        # the second committer found the lock taken three times while the first held it
        polled = clock.wait_for_polls(3, unless=lambda: bool(order or crashed))
        assert order == [] and not crashed, (order, crashed)
        assert polled, "the second committer never polled the lock"
        order.append("first done")
    thread.join(120)
    if crashed:
        raise crashed[0]
    assert order == ["first done", "second"]
    with commit_lock(set_root):
        with pytest.raises(StoreError, match="another run has held the commit lock"):
            with commit_lock(set_root, timeout=0.3, poll=0.05):
                pass


def test_local_lock_is_exclusive(tmp_path, clock):
    holds_exclusively(str(tmp_path / "set"), clock)


def test_object_store_lock_is_exclusive_and_a_stale_one_is_broken(s3_server, clock):
    import fsspec

    holds_exclusively("s3://tlfs-test/lockset", clock)
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"tlfs-test/stale/{LOCK_NAME}", json.dumps({"token": "crashed", "at": time.time() - 3600}).encode())
    with commit_lock("s3://tlfs-test/stale", timeout=2, stale_after=600):
        assert json.loads(fs.cat_file(f"tlfs-test/stale/{LOCK_NAME}"))["token"] != "crashed"
    assert not fs.exists(f"tlfs-test/stale/{LOCK_NAME}")
    # a local store copied whole onto the object store brings its lock's empty file: not a holder
    fs.pipe_file(f"tlfs-test/copied/{LOCK_NAME}", b"")
    with commit_lock("s3://tlfs-test/copied", timeout=2, stale_after=600):
        assert json.loads(fs.cat_file(f"tlfs-test/copied/{LOCK_NAME}"))["token"]
    assert not fs.exists(f"tlfs-test/copied/{LOCK_NAME}")


def test_a_lock_that_cannot_be_made_is_a_write_that_failed_naming_the_file(tmp_path):
    """A read-only or full disk (here: a file where the set's folder should be) stops a
    committer with the one line any failed write gives, not an operating system's traceback."""
    from tlfs.features.errors import WriteFailed

    (tmp_path / "store").write_bytes(b"not a folder")
    set_root = str(tmp_path / "store" / "cifar10" / "set")
    with pytest.raises(WriteFailed) as failed:
        with commit_lock(set_root):
            pass
    assert str(failed.value) == f"could not write {set_root}/{LOCK_NAME}: Not a directory"
