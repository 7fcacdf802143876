"""Object-storage faults against moto's S3 server: throttling, connection resets in the
middle of an upload and responses lost after the object was stored are retried, and the
result equals a fault-free run; a write that keeps failing stops the run with an error
naming the object and leaves no visible partial shard and no manifest."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from tlfs import features
from tlfs.features.errors import StoreError
from tlfs.pipeline import extract
from tests.conftest import folder_images, write_tar
from tests.features.s3_fault_proxy import FAULTS, FaultyS3Proxy
from tests.extraction import run_extract

pytestmark = pytest.mark.faults

BUCKET = "tlfs-test"
LAYERS, SPLITS = ["block15", "head"], ["test", "train"]


def seeded_faults(seed: int, rate: float, prefix: str, max_in_a_row: int = 2):
    """Faults on a random share of the store's requests, never more than
    ``max_in_a_row`` on one request in a row (the client gives up after a few)."""
    rng, streak, lock = random.Random(seed), Counter(), threading.Lock()

    def decide(method: str, path: str) -> str | None:
        key = (method, path.split("?")[0])
        if not key[1].startswith(prefix) or method not in ("PUT", "GET"):
            return None
        with lock:
            if streak[key] < max_in_a_row and rng.random() < rate:
                streak[key] += 1
                return rng.choice(FAULTS if method == "PUT" else ("throttle", "reset"))
            streak[key] = 0
            return None

    return decide


def through(monkeypatch, endpoint: str) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3fs.S3FileSystem.clear_instance_cache()


def run(source, store: str, models_root: str, tmp_path) -> dict:
    return run_extract("colors", [str(source)], "efficientnet_lite0", store, models_root, layers=LAYERS, shard_size=4,
                       batch_size=4, cache_dir=str(tmp_path / "cache"), show_progress=False, log=lambda *_: None)


def rows(store: str) -> dict:
    out = {}
    for layer in LAYERS:
        for split in SPLITS:
            frame = features.load("colors", "efficientnet_lite0", layer, split, store)
            out[(layer, split)] = (list(frame["image_id"]), b"".join(v.tobytes() for v in frame["features"]))
    return out


@pytest.fixture
def source(tmp_path):
    return write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=4))  # 12 images per split


def test_throttling_and_dropped_connections_are_retried(s3_server, source, tmp_path, lite0, models_root, monkeypatch):
    clean = run(source, f"s3://{BUCKET}/clean", models_root, tmp_path)
    expected = rows(f"s3://{BUCKET}/clean")
    upstream = int(s3_server.rsplit(":", 1)[1])
    with FaultyS3Proxy(upstream, seeded_faults(seed=7, rate=0.3, prefix=f"/{BUCKET}/faulty")) as proxy:
        through(monkeypatch, proxy.endpoint)
        summary = run(source, f"s3://{BUCKET}/faulty", models_root, tmp_path)
        got = rows(f"s3://{BUCKET}/faulty")
        assert extract.verify(summary["set_uri"])["bad"] == []
    print(f"\nS3 faults injected and survived: {dict(proxy.counts)}")
    assert sum(proxy.counts[f] for f in FAULTS) >= 5 and all(proxy.counts[f] for f in FAULTS)
    assert got == expected and summary["counts"] == clean["counts"]


def test_a_write_that_keeps_failing_leaves_no_partial_shard(s3_server, source, tmp_path, lite0, models_root, monkeypatch):
    import fsspec

    store = f"s3://{BUCKET}/failing"
    upstream = int(s3_server.rsplit(":", 1)[1])

    def decide(method: str, path: str) -> str | None:
        return "reset" if method == "PUT" and "part-" in path and path.split("?")[0].endswith("-00001.parquet") else None

    # botocore's own setting: 2 tries, not its default 5 with backoff (35 s more here, the same outcome)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with FaultyS3Proxy(upstream, decide) as proxy:
        through(monkeypatch, proxy.endpoint)
        with pytest.raises(StoreError, match=r"could not write s3://.*-00001\.parquet"):
            run(source, store, models_root, tmp_path)
    assert proxy.counts["reset"] >= 2  # it was retried before giving up
    through(monkeypatch, s3_server)
    keys = fsspec.filesystem("s3").find(f"{BUCKET}/failing")
    assert not [k for k in keys if k.endswith("-00001.parquet")], "a partial shard is visible"
    assert not [k for k in keys if k.endswith("_manifest.json")]
    with pytest.raises(features.NotCommitted):
        features.load("colors", "efficientnet_lite0", "head", "train", store)


def test_a_lock_whose_put_answer_was_lost_is_held_not_waited_on(s3_server, monkeypatch, clock):
    """The conditional PUT of the commit lock is stored but its answer is lost; the
    client's retry gets 412. The lock holds its own token: it must take the lock at
    once, not wait for it to go stale."""
    import fsspec

    from tlfs.features.lock import LOCK_NAME, commit_lock

    dropped = []

    def decide(method: str, path: str) -> str | None:
        if method == "PUT" and path.split("?")[0].endswith(f"/lost/{LOCK_NAME}") and not dropped:
            dropped.append(path)
            return "drop_response"
        return None

    upstream = int(s3_server.rsplit(":", 1)[1])
    with FaultyS3Proxy(upstream, decide) as proxy:
        through(monkeypatch, proxy.endpoint)
        with commit_lock(f"s3://{BUCKET}/lost", timeout=30, stale_after=600, poll=0.05):
            assert fsspec.filesystem("s3").exists(f"{BUCKET}/lost/{LOCK_NAME}")
    assert dropped and proxy.counts["drop_response"] == 1, "the fault was never injected"
    assert clock.polls == 0, f"it polled its own lock {clock.polls} times, as if another run held it"
    through(monkeypatch, s3_server)
    assert not fsspec.filesystem("s3").exists(f"{BUCKET}/lost/{LOCK_NAME}"), "the lock was not released"
