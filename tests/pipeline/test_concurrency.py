"""Concurrent runs: two extractions of the same feature set at once, and readers while
commits replace the set, never produce a corrupt or mixed set. The two runs are made to
overlap: each is SIGSTOPped at its first shard file until both are there. Same plan: both runs
converge on one committed set. Different plans: the set is whole, one plan's or the
other's. A live run's files survive the other's commit (its lease protects them); a
run that stopped renewing its lease (here: SIGSTOPped at a chosen storage event, so
the interleaving is fixed, not hoped for) loses them and fails saying so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.errors import StoreError
from tlfs.features.leases import live_plans
from tlfs.pipeline import extract
from tests.conftest import REPO, folder_images, write_tree
from tests.faults import python_path, state
from tests.extraction import run_extract

pytestmark = pytest.mark.faults

DATASET, BACKBONE, LAYERS, SPLITS = "race", "efficientnet_lite0", ["block15", "head"], ["test", "train"]
TRIALS = 2  # each trial's runs are made to overlap (see overlapping)


REPLACED = "was replaced: another run's commit removed its staging"


def start(source: Path, store: Path, models: str, limit: int | None = None, env: dict | None = None) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("tlfs")), "extract", "--dataset", DATASET, "--source", str(source),
               "--backbone", BACKBONE, "--store", str(store), "--models", models, "--layers", ",".join(LAYERS),
               "--shard-size", "4", "--batch-size", "4", "--no-progress", "--threads", "1"]
    command += ["--limit", str(limit), "--full"] if limit else []  # the set made the sample, replacing a larger one
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": python_path(faults=False), **(env or {})})


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def overlapping(source: Path, store: Path, models: str, limits: list, markers: Path) -> list[tuple[int, str]]:
    """Runs of ``tlfs extract`` (one per limit) that are all live at one moment: each is
    SIGSTOPped at its first shard file, and all go on (SIGCONT) only once every one has
    got there, so the overlap is made, not hoped for. Their (exit status, stderr)."""
    markers.mkdir(parents=True)
    runs = []
    for i, limit in enumerate(limits):
        faults = {"PYTHONPATH": python_path(), "TLFS_STOP_AT": "1", "TLFS_KILL_MATCH": "part-",
                  "TLFS_STOP_MARKER": str(markers / str(i))}
        runs.append(start(source, store, models, limit, env=faults))
    deadline = time.monotonic() + 300
    while len(list(markers.iterdir())) < len(runs) or any(state(proc.pid) != "T" for proc in runs):
        for proc in runs:
            assert proc.poll() is None, f"a run ended before its first shard file: {proc.communicate()[1][-1500:]}"
        assert time.monotonic() < deadline, "the runs never all reached their first shard file"
        time.sleep(0.1)
    for proc in runs:  # every run is mid-extraction now
        proc.send_signal(signal.SIGCONT)
    return [finish(p) for p in runs]


def load_one(store: Path, layer: str, split: str) -> tuple:
    """The rows by image id (a set built on another run's version orders its reused rows first)."""
    frame = features.load(DATASET, BACKBONE, layer, split, str(store))
    return tuple(sorted(zip(frame["image_id"], (v.tobytes() for v in frame["features"]))))


def snapshot(store: Path) -> dict:
    return {(layer, split): load_one(store, layer, split) for layer in LAYERS for split in SPLITS}


def run_in_process(source: Path, store: Path, models: str, limit: int | None = None) -> dict:
    return run_extract(DATASET, [str(source)], BACKBONE, str(store), models, layers=LAYERS, limit=limit,
                       incremental=limit is None,  # a sample replaces a larger set only when asked (--full)
                       shard_size=4, batch_size=4, threads=1, show_progress=False, log=lambda *_: None)


@pytest.fixture
def source(tmp_path) -> Path:
    return write_tree(tmp_path / "images", folder_images(per_class=5))


@pytest.fixture
def references(tmp_path, source, lite0, models_root) -> dict:
    """The whole set of each plan, extracted alone."""
    refs = {}
    for limit in (None, 9):
        store = tmp_path / f"alone-{limit}"
        run_in_process(source, store, models_root, limit)
        refs[limit] = snapshot(store)
    return refs


@pytest.mark.slow
def test_two_runs_of_the_same_plan_at_once_converge_on_one_set(tmp_path, source, references, models_root):
    for trial in range(TRIALS):
        store = tmp_path / f"same-{trial}"
        outcomes = overlapping(source, store, models_root, [None, None], tmp_path / f"same-{trial}-stopped")
        failed = [err.strip().splitlines()[-1] for code, err in outcomes if code != 0]
        assert not failed, f"trial {trial}: {failed}"
        assert snapshot(store) == references[None]
        set_root = next(store.glob(f"{DATASET}/*"))
        assert extract.verify(str(set_root))["bad"] == []


@pytest.mark.slow
def test_two_different_plans_at_once_leave_one_whole_set_and_a_clear_loser(tmp_path, source, references, models_root):
    losers = 0
    for trial in range(TRIALS):
        store = tmp_path / f"different-{trial}"
        outcomes = overlapping(source, store, models_root, [None, 9], tmp_path / f"different-{trial}-stopped")
        for code, err in outcomes:  # both runs are live: normally both commit, the last one wins
            assert code == 0 or REPLACED in err.strip().splitlines()[-1], err[-1500:]
        assert any(code == 0 for code, _ in outcomes)
        losers += sum(code != 0 for code, _ in outcomes)
        assert snapshot(store) in (references[None], references[9])
        set_root = next(store.glob(f"{DATASET}/*"))
        assert extract.verify(str(set_root))["bad"] == []
    print(f"\ndifferent plans at once: {TRIALS} trials, {losers} runs failed clearly, every set whole")


def stopped_at_its_first_shard_file(source: Path, store: Path, models: str, marker: Path,
                                    lease_seconds: str) -> tuple[subprocess.Popen, Path, str]:
    """``tlfs extract`` of the whole set, SIGSTOPped (every thread, its lease renewal
    too) right after writing its first shard file; with its set's folder and plan id."""
    # one writer thread: event 3 is then the first file's rename done; with a pool, two files'
    # writes can come first and the stop would land before any file is in place
    faults = {"PYTHONPATH": python_path(),
              "TLFS_STOP_AT": "3", "TLFS_KILL_MATCH": "part-", "TLFS_STOP_MARKER": str(marker),
              "TLFS_LEASE_SECONDS": lease_seconds, "TLFS_WRITERS": "1"}
    proc = start(source, store, models, env=faults)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before its stop point: {proc.communicate()[1][-1500:]}"
        assert time.monotonic() < deadline, "the run never reached its first shard file"
        time.sleep(0.1)
    set_root = next(store.glob(f"{DATASET}/*"))
    return proc, set_root, next((set_root / layout.STAGING).iterdir()).name


def shard_files_of(set_root: Path, plan_id: str) -> list[Path]:
    """A plan's shard files: in its staging until its commit moves them into place."""
    return list(set_root.glob(f"layer=*/split=*/part-{plan_id[:8]}-*")) + \
        list((set_root / layout.STAGING / plan_id / "files").rglob(f"part-{plan_id[:8]}-*"))


@pytest.mark.slow
def test_a_run_that_stopped_renewing_its_lease_loses_its_plan_and_says_so(tmp_path, source, references, models_root):
    store = tmp_path / "store"
    stopped, set_root, plan_id = stopped_at_its_first_shard_file(source, store, models_root, tmp_path / "stopped", "2")
    try:
        deadline = time.monotonic() + 60
        while plan_id in live_plans(str(set_root)):  # the lease runs out: nobody renews it
            assert time.monotonic() < deadline, "the stopped run's lease never ran out"
            time.sleep(0.1)
        run_in_process(source, store, models_root, 9)
        assert not (set_root / layout.STAGING / plan_id).exists(), "the commit kept a plan whose lease had run out"
        assert not shard_files_of(set_root, plan_id), "its shard files were kept"
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    code, err = finish(stopped)
    assert code == 1 and REPLACED in err.strip().splitlines()[-1], err[-1500:]
    assert "Traceback" not in err and "Errno" not in err, err[-1500:]
    assert snapshot(store) == references[9]
    assert extract.verify(str(set_root))["bad"] == []


@pytest.mark.slow
def test_a_live_run_keeps_its_plan_through_another_commit_and_commits_last(tmp_path, source, references, models_root):
    store = tmp_path / "store"
    stopped, set_root, plan_id = stopped_at_its_first_shard_file(source, store, models_root, tmp_path / "stopped", "600")
    try:
        run_in_process(source, store, models_root, 9)
        assert (set_root / layout.STAGING / plan_id / layout.PLAN).exists(), "the commit removed a live run's plan"
        assert shard_files_of(set_root, plan_id), "the commit removed a live run's shard file"
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    code, err = finish(stopped)
    assert code == 0, err[-1500:]
    assert snapshot(store) == references[None]
    listed = {f"{set_root.name}/{p.relative_to(set_root)}" for p in set_root.glob("layer=*/split=*/part-*.parquet")}
    committed = {f"{set_root.name}/{s['path']}" for s in features.describe(DATASET, BACKBONE, str(store))["shards"]}
    assert listed == committed, "files of the replaced plan were left beside the committed set"


@pytest.mark.slow
def test_readers_during_commits_see_one_whole_version(tmp_path, source, references, models_root):
    store = tmp_path / "store"
    run_in_process(source, store, models_root, 9)
    seen, retried, problems, crashed, stop = [], [], [], [], threading.Event()

    def reader() -> None:
        try:
            read_until(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            crashed.append(exc)

    def read_until(stop: threading.Event) -> None:
        while not stop.is_set():
            for layer in LAYERS:
                for split in SPLITS:
                    try:
                        got = load_one(store, layer, split)
                    except StoreError as exc:  # allowed: "changed twice while being read"
                        if "changed twice" not in str(exc):
                            raise
                        retried.append(1)
                        continue
                    except Exception as exc:  # noqa: BLE001 - collected for the assertion
                        problems.append(repr(exc))
                        continue
                    whole = {references[limit][(layer, split)] for limit in references}
                    seen.append(got in whole)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for commit in range(2 * TRIALS):  # each run replaces the other plan and removes its files
            run_in_process(source, store, models_root, None if commit % 2 == 0 else 9)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if crashed:
        raise crashed[0]
    assert not problems, problems[:3]
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} reads were not one whole version"
    print(f"\nreaders during {2 * TRIALS} commits: {len(seen)} reads, all whole; {len(retried)} asked to retry")
