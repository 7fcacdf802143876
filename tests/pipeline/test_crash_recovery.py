"""Crashes lose nothing: ``tlfs extract`` is SIGKILLed at seeded random points across
export, shard writing and the manifest commit (each kill tearing the write in flight),
then run again. Every time, the result equals an uninterrupted run row for row, shards
finished before the crash are not recomputed, and a reader in between sees either the
previously committed set or the new one, whole, and never a torn shard file.

``TLFS_FAULT_TRIALS`` (default 10: the suite's share; 24 or more for a deeper run) and ``TLFS_FAULT_SEED`` choose how many kill points
and which; the test prints the tally.
"""

from __future__ import annotations

import json
import os
import re
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.versions import locate
from tlfs.pipeline import extract
from tests.conftest import folder_images, write_tree
from tests.faults import python_path, state
from tests.extraction import run_extract

pytestmark = pytest.mark.faults

DATASET, BACKBONE, LAYERS, SPLITS = "crash", "efficientnet_lite0", ["block15", "head"], ["test", "train"]
ARGS = ["--layers", ",".join(LAYERS), "--shard-size", "5", "--batch-size", "4", "--no-progress"]
QUOTA = {"export": 2, "plan": 2, "commit": 3}  # the rest of the trials go to shard writing


def tlfs_extract(source: Path, store: Path, models: Path, extra_env: dict, limit: int | None = None) -> subprocess.CompletedProcess:
    # one writer thread: the writes come in the same order in every run, so kill point N
    # is the same write as in the reference run (the pooled writers have trials of their own)
    env = {**os.environ, "TLFS_WRITERS": "1", **extra_env, "PYTHONPATH": python_path()}
    command = [str(Path(sys.executable).with_name("tlfs")), "extract", "--dataset", DATASET, "--source", str(source),
               "--backbone", BACKBONE, "--store", str(store), "--models", str(models), *ARGS]
    command += ["--limit", str(limit)] if limit else []
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def resume(source: Path, store: Path, models: Path) -> dict:
    return run_extract(DATASET, [str(source)], BACKBONE, str(store), str(models), layers=LAYERS, shard_size=5,
                       batch_size=4, show_progress=False, log=lambda *_: None)


def snapshot(store: Path) -> dict:
    """What a reader gets: (ids, labels, feature bytes) per layer and split."""
    out = {}
    for layer in LAYERS:
        for split in SPLITS:
            frame = features.load(DATASET, BACKBONE, layer, split, str(store))
            out[(layer, split)] = (list(frame["image_id"]), list(frame["label"]), np.stack(frame["features"]).tobytes())
    return out


def phase_of(kind: str, path: str) -> str:
    if kind == "rm" or path.endswith(layout.MANIFEST):
        return "commit"
    if "model.onnx" in path or "model_card.json" in path:
        return "export"
    if path.endswith("plan.json"):
        return "plan"
    return "shard"


def stable_name(path: str) -> str:
    """A file's name, the same in every run: a lease is named by its holder (host, pid),
    a temporary file by a random suffix."""
    parent, name = Path(path).parent.name, Path(path).name
    return f"{layout.LEASES}/<holder>" if parent == layout.LEASES else re.sub(r"\.[0-9a-f]{32}\.tmp$", ".<random>.tmp", name)


def events(log: Path) -> list[tuple[int, str, str, str]]:
    rows = []
    for line in log.read_text().splitlines():
        number, kind, path = line.split("\t", 2)
        rows.append((int(number), kind, path, phase_of(kind, path)))
    return rows


def choose_kill_points(all_events: list, trials: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    by_phase: dict[str, list[int]] = {}
    for number, _, _, phase in all_events:
        by_phase.setdefault(phase, []).append(number)
    chosen = []
    for phase, quota in QUOTA.items():
        candidates = by_phase.get(phase, [])
        chosen += rng.sample(candidates, min(quota, len(candidates)))
    rest = [n for n in by_phase["shard"] if n not in chosen]
    chosen += rng.sample(rest, min(len(rest), max(0, trials - len(chosen))))
    return sorted(chosen)


def file_identity(set_root: Path, relative: str) -> tuple[int, int] | None:
    """(inode, mtime) of a shard file wherever it is (staged, moved in, retired): a move
    keeps both, a rewrite does not."""
    found = locate(str(set_root), relative)
    return (Path(found).stat().st_ino, Path(found).stat().st_mtime_ns) if found else None


def finished_shards(store: Path, plan_id: str) -> dict[str, tuple[int, int]]:
    """Shard files of results extracted before the crash: relative path -> (inode, mtime).
    (Shards reused from the older version are not extracted by the run at all.)"""
    set_root = next(store.glob(f"{DATASET}/*"))
    files = {}
    staging = set_root / layout.STAGING / plan_id
    gathered = staging / "records.jsonl"  # a commit that finished gathered them
    saved = [json.loads(r.read_text()) for r in (staging / "shards").glob("*.json")]
    for result in saved + [json.loads(line) for line in (gathered.read_text().splitlines() if gathered.exists() else [])]:
        if result.get("reused"):
            continue
        found = {f["path"]: locate(str(set_root), f["path"]) for f in result["files"].values()}
        if all(found[f["path"]] and Path(found[f["path"]]).stat().st_size == f["bytes"] for f in result["files"].values()):
            files.update({rel: file_identity(set_root, rel) for rel in found})
    return files


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 10 kill points take ~1.5 min on an idle 2-core machine; TLFS_FAULT_TRIALS scales it
def incremental_case(tmp_path: Path) -> tuple[Path, Path, dict, dict, str, list]:
    """The store already holds an older version of the set, over an older state of the
    same folder: the run under test is incremental. It reuses that version's unchanged
    shards, copies two without an image since removed and one since replaced, extracts
    the replaced and the new images, and its commit retires files: more ways to crash.
    Returns the changed folder, the store as the older version left it, what a reader got
    of it and of the uninterrupted run's, that run's plan id, and its storage events."""
    small, full = folder_images(per_class=4), folder_images(per_class=6)  # 12, then 18 images per split
    source = write_tree(tmp_path / "images", {**small, "train/red/gone.png": full["train/red/005.png"],
                                              "train/blue/000.png": full["train/green/005.png"]})
    template = tmp_path / "template"
    done = tlfs_extract(source, template, tmp_path / "models-template", {})
    assert done.returncode == 0, done.stderr[-2000:]
    old = snapshot(template)
    (source / "train/red/gone.png").unlink()
    write_tree(source, {"train/blue/000.png": full["train/blue/000.png"], **{k: v for k, v in full.items() if k not in small}})

    reference_store = tmp_path / "reference"
    shutil.copytree(template, reference_store)
    log = tmp_path / "reference.events"
    done = tlfs_extract(source, reference_store, tmp_path / "models-reference", {"TLFS_FAULT_LOG": str(log)})
    assert done.returncode == 0, done.stderr[-2000:]
    described = features.describe(DATASET, BACKBONE, str(reference_store))
    assert {k: described["changes"][k] for k in ("added", "changed", "removed", "reused")} == \
        {"added": 12, "changed": 1, "removed": 1, "reused": 23}
    return source, template, old, snapshot(reference_store), described["plan_id"], events(log)


def test_sigkill_anywhere_then_rerun_equals_an_uninterrupted_run(tmp_path, lite0):
    source, template, old, reference, plan_id, all_events = incremental_case(tmp_path)

    trials = int(os.environ.get("TLFS_FAULT_TRIALS", "10"))
    seed = int(os.environ.get("TLFS_FAULT_SEED", "20261123"))
    kill_points = choose_kill_points(all_events, trials, seed)
    tally = {"tried": 0, "by_phase": {}, "shards_reused": 0}
    for point in kill_points:
        phase = all_events[point - 1][3]
        store, models = tmp_path / f"store-{point}", tmp_path / f"models-{point}"
        shutil.copytree(template, store)
        killed = tlfs_extract(source, store, models, {"TLFS_KILL_AT": str(point), "TLFS_FAULT_LOG": str(tmp_path / f"{point}.events")})
        assert killed.returncode == -9, f"kill point {point} ({all_events[point - 1]}): exit {killed.returncode}\n{killed.stderr[-2000:]}"
        last = events(tmp_path / f"{point}.events")[-1]
        assert (last[0], last[1], stable_name(last[2])) == (point, all_events[point - 1][1], stable_name(all_events[point - 1][2]))
        tally["tried"] += 1

        between = snapshot(store)  # a reader during the outage: old or new set, whole
        assert between in (old, reference), f"kill point {point}: a reader saw a mixed or partial set"
        for part in store.rglob("part-*.parquet"):
            pq.read_metadata(part)  # a visible shard file is never torn
        kept = finished_shards(store, plan_id)

        summary = resume(source, store, models)
        assert snapshot(store) == reference, f"kill point {point} ({phase}): the re-run differs from an uninterrupted run"
        set_root = next(store.glob(f"{DATASET}/*"))
        unchanged = {p: file_identity(set_root, p) for p in kept}
        assert unchanged == kept, f"kill point {point}: shards finished before the crash were rewritten"
        assert summary["shards_skipped"] * len(LAYERS) == len(kept)
        assert extract.verify(str(set_root))["bad"] == []
        tally["by_phase"][phase] = tally["by_phase"].get(phase, 0) + 1
        tally["shards_reused"] += summary["shards_skipped"]
        shutil.rmtree(store), shutil.rmtree(models, ignore_errors=True)
    # the writer pool (two threads): writes in no fixed order, so a kill point is the Nth
    # shard write, whichever file that is; the re-run must still equal the reference
    shard_writes = [n for n, _, _, phase in all_events if phase == "shard"]
    for point in random.Random(seed).sample(shard_writes, min(2, len(shard_writes))):
        store, models = tmp_path / f"pool-{point}", tmp_path / f"pool-models-{point}"
        shutil.copytree(template, store)
        killed = tlfs_extract(source, store, models, {"TLFS_WRITERS": "2", "TLFS_KILL_AT": str(point)})
        assert killed.returncode == -9, f"pooled kill point {point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
        assert snapshot(store) in (old, reference), f"pooled kill point {point}: a reader saw a mixed or partial set"
        resume(source, store, models)
        assert snapshot(store) == reference, f"pooled kill point {point}: the re-run differs from an uninterrupted run"
        assert extract.verify(str(next(store.glob(f"{DATASET}/*"))))["bad"] == []
        tally["pooled"] = tally.get("pooled", 0) + 1
        shutil.rmtree(store), shutil.rmtree(models, ignore_errors=True)
    print(f"\ncrash recovery (seed {seed}), every kill point survived: {json.dumps(tally)}")
    # the kill points reached every phase, and some re-runs found finished shards to keep
    assert tally["tried"] >= min(trials, 20) and set(tally["by_phase"]) == {"export", "plan", "shard", "commit"}
    assert tally["shards_reused"] > 0, "no kill point came after a finished shard: the keep-finished-work path never ran"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_commit_killed_at_each_of_its_steps_leaves_the_layer_folders_holding_only_the_version_it_names(tmp_path, lite0):
    """A commit lists the layer= folders only where the newest manifest may not say what
    they hold (features/versions.Listing). Killed amid moving its files in, after its
    manifest, amid retiring the older files, and while setting the superseded plan aside: the
    re-run equals the uninterrupted run, and the layer= folders hold exactly the files its
    manifest lists (a glob finds no other), also where another plan commits next."""
    source, template, old, reference, reference_plan, all_events = incremental_case(tmp_path)
    first = next(n for n, _, path, _ in all_events if f"/{layout.VERSIONS}/" in path and not path.endswith(".tmp"))
    manifest = next(n for n, kind, path, _ in all_events if kind == "done" and path.endswith(layout.MANIFEST))
    renames = [n for n, kind, _, _ in all_events if kind == "rename" and first < n]
    set_aside = [n for n, kind, path, _ in all_events if kind == "rename" and f"/{layout.SUPERSEDED}/" in path]
    moved_in = [n for n in renames if n < manifest - 2]
    retired = [n for n in renames if n > manifest and n not in set_aside]
    assert moved_in and retired and set_aside, all_events[first - 1:]
    points = sorted({moved_in[0], manifest, retired[0], set_aside[0]})  # one of each kind (a minute in all)
    for point in points:
        store, models = tmp_path / f"store-{point}", tmp_path / f"models-{point}"
        shutil.copytree(template, store)
        killed = tlfs_extract(source, store, models, {"TLFS_KILL_AT": str(point)})
        assert killed.returncode == -9, f"kill point {point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
        assert snapshot(store) in (old, reference), f"kill point {point}: a reader saw a mixed or partial set"
        resume(source, store, models)
        assert snapshot(store) == reference, f"kill point {point}: the re-run differs from an uninterrupted run"
        set_root = next(store.glob(f"{DATASET}/*"))
        listed = {s["path"] for s in features.open_set(DATASET, BACKBONE, store=str(store)).manifest["shards"]}
        placed = {p.relative_to(set_root).as_posix() for p in set_root.glob("layer=*/**/*.parquet")}
        assert placed == listed, f"kill point {point}: the layer folders hold {sorted(placed - listed)} beyond the manifest"
        shutil.rmtree(store), shutil.rmtree(models, ignore_errors=True)
    # stopped amid moving its files in, then another plan commits (an image removed
    # meanwhile): the stopped plan's files are in the layer folders, listed by no manifest
    store, models = tmp_path / "store-other-plan", tmp_path / "models-other-plan"
    shutil.copytree(template, store)
    assert tlfs_extract(source, store, models, {"TLFS_KILL_AT": str(moved_in[-1])}).returncode == -9
    (source / "train/red/000.png").unlink()
    resume(source, store, models)
    set_root = next(store.glob(f"{DATASET}/*"))
    committed = features.open_set(DATASET, BACKBONE, store=str(store)).manifest
    assert committed["plan_id"] != reference_plan and "train/red/000.png" not in snapshot(store)[(LAYERS[0], "train")][0]
    placed = {p.relative_to(set_root).as_posix() for p in set_root.glob("layer=*/**/*.parquet")}
    assert placed == {s["path"] for s in committed["shards"]}, "the stopped plan's files were left in the layer folders"
    assert extract.verify(str(set_root))["bad"] == []


def tlfs_vacuum(store: Path, extra_env: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra_env, "PYTHONPATH": python_path()}
    command = [str(Path(sys.executable).with_name("tlfs")), "vacuum", "--dataset", DATASET, "--backbone", BACKBONE,
               "--store", str(store), "--keep", "1", "--keep-days", "0"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def snapshot_or_gone(store: Path, version: int):
    """A reader of an older version during a vacuum: its rows whole, or a clear 'gone'."""
    try:
        return {(layer, split): features.load(DATASET, BACKBONE, layer, split, str(store), version=version)
                ["image_id"].tolist() for layer in LAYERS for split in SPLITS}
    except (features.NotCommitted, features.SetReplaced):
        return "gone"


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def gone(pid: int) -> bool:
    """Exited (a zombie left for init to reap counts: it runs nothing)."""
    return state(pid) in (None, "Z")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from Linux's /proc")
def test_ctrl_c_stops_extract_with_one_line_and_the_same_command_goes_on(tmp_path, lite0):
    """Ctrl-C in a terminal sends SIGINT to every process of the group, decode workers
    included. ``tlfs extract`` stops at once with one line saying what is kept (no worker's
    traceback), leaves no process behind, and the same command then computes only the shards
    not finished, giving the set an uninterrupted run gives."""
    source = write_tree(tmp_path / "images", folder_images())
    store, models, stopped = tmp_path / "store", tmp_path / "models", tmp_path / "stopped"
    # stopped (SIGSTOP) as it begins its second shard's first file: its first shard and record are written
    # (one writer thread: a shard's files, then its record, in shard order)
    env = {**os.environ, "TLFS_WRITERS": "1", "PYTHONPATH": python_path(), "TLFS_STOP_AT": "5",
           "TLFS_KILL_MATCH": "part-", "TLFS_STOP_MARKER": str(stopped)}
    command = [str(Path(sys.executable).with_name("tlfs")), "extract", "--dataset", DATASET, "--source", str(source),
               "--backbone", BACKBONE, "--store", str(store), "--models", str(models), *ARGS, "--decode-workers", "2"]
    # as a shell starts a command: Ctrl-C's default action, whatever this test's process does with it
    as_a_shell = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])"]
    run = subprocess.Popen(as_a_shell + command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.monotonic() + 300
    while not (stopped.exists() and state(run.pid) == "T"):  # the marker is made just before the stop
        assert run.poll() is None, f"the run ended before its second shard: {run.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the run never reached its second shard"
        time.sleep(0.05)
    workers = children(run.pid)
    assert len(workers) >= 2, workers  # the decode workers (and multiprocessing's resource tracker)
    os.killpg(run.pid, signal.SIGINT)  # the whole group, as a terminal does
    os.kill(run.pid, signal.SIGCONT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == \
        "tlfs extract: interrupted; the shards it finished are kept: the same command goes on from them"
    assert "Traceback" not in err, err[-2000:]
    deadline = time.monotonic() + 10  # a worker exits once its pool is shut down, or its parent is gone
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in workers), [pid for pid in workers if not gone(pid)]

    resumed = resume(source, store, models)
    assert resumed["shards_skipped"] == 1 and resumed["shards"] == 6  # shards of 5, 5 and 2 a split
    assert (resumed["images_extracted"], resumed["images_computed"]) == (24, 19)
    resume(source, tmp_path / "uninterrupted", models)
    assert snapshot(store) == snapshot(tmp_path / "uninterrupted")


def test_a_disk_that_fills_up_stops_extract_with_one_line_and_the_same_command_goes_on(tmp_path, lite0):
    """The disk fills as the second shard's first file is written: ``tlfs extract`` stops
    with one line naming that file and the reason, and saying what is kept; the half-written
    file is not left to hold the space; once there is room, the same command computes only the
    shards not finished and gives the set an uninterrupted run gives."""
    source = write_tree(tmp_path / "images", folder_images())
    store, models = tmp_path / "store", tmp_path / "models"
    # the third part file written: the second shard's first (2 layers, one writer thread)
    full = tlfs_extract(source, store, models, {"TLFS_FULL_AT": "3", "TLFS_KILL_MATCH": "part-"})
    assert full.returncode == 1, full.stderr[-2000:]
    assert "Traceback" not in full.stderr, full.stderr[-2000:]
    assert re.fullmatch(r"tlfs extract: error: could not write \S+/layer=\w+/split=test/part-\w+-00001\.parquet: "
                        r"No space left on device; the shards it finished are kept: the same command goes on from them",
                        full.stderr.strip().splitlines()[-1]), full.stderr[-2000:]
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")], "a half-written file was left behind"

    resumed = resume(source, store, models)
    assert resumed["shards_skipped"] == 1 and resumed["shards"] == 6  # shards of 5, 5 and 2 a split
    assert (resumed["images_extracted"], resumed["images_computed"]) == (24, 19)
    resume(source, tmp_path / "uninterrupted", models)
    assert snapshot(store) == snapshot(tmp_path / "uninterrupted")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_disk_full_at_any_write_of_a_run_ends_committed_or_in_one_line_and_a_rerun_loses_nothing(tmp_path, lite0):
    """Whatever write the disk fills at (planning's, a shard file, a record, the lease, the
    commit's), the run stops with one line naming the reason, or, where its version was
    committed before it (the records gathered after the commit), says it committed; it leaves
    no half-written file; and once there is room the same run gives the set an uninterrupted
    run gives."""
    from tlfs.features.errors import WriteFailed
    from tlfs.pipeline.errors import PipelineError
    from tests.faults import install

    source = write_tree(tmp_path / "images", folder_images(per_class=2))  # 6 images a split: shards of 5 and 1
    models = tmp_path / "models"
    with pytest.MonkeyPatch.context() as patch:
        counter = install({}, patch=patch.setattr, action=lambda *_: None)
        resume(source, tmp_path / "reference", models)
    reference, writes = snapshot(tmp_path / "reference"), counter.writes
    assert writes >= 12  # the plan, its entries, the lease, 8 shard files, their records, the manifest, ...
    outcomes = []
    for step in range(1, writes + 1):
        store = tmp_path / f"full-at-{step}"
        with pytest.MonkeyPatch.context() as patch:
            install({"TLFS_FULL_AT": str(step)}, patch=patch.setattr)
            try:
                resume(source, store, models)
                outcomes.append("committed")
            except (WriteFailed, PipelineError) as exc:
                assert len(str(exc).splitlines()) == 1 and "No space left on device" in str(exc), (step, str(exc))
                outcomes.append("stopped")
        assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")], f"full at write {step}: a part left"
        published = any(store.glob(f"{DATASET}/*/{layout.MANIFEST}"))
        assert (outcomes[-1] == "committed") == published, f"full at write {step}: {outcomes[-1]}, manifest {published}"
        resume(source, store, models)  # room made: the same run again
        assert snapshot(store) == reference, f"full at write {step} ({outcomes[-1]}): the set differs"
        assert extract.verify(str(next(store.glob(f"{DATASET}/*"))))["bad"] == []
    assert outcomes.count("stopped") >= writes - 2 and outcomes[-1] == "committed", outcomes


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_anywhere_in_a_vacuum_loses_no_kept_row_and_a_rerun_finishes_it(tmp_path, lite0, models_root):
    source = write_tree(tmp_path / "images", folder_images(per_class=2))
    store = tmp_path / "template"
    for change in ({}, {"train/red/n.png": folder_images(per_class=3)["train/red/002.png"]}, {"train/blue/001.png": b""}):
        write_tree(source, change)  # three versions: an image added, then one replaced by an unreadable file
        run_extract(DATASET, [str(source)], BACKBONE, str(store), models_root, layers=LAYERS, shard_size=2, batch_size=4,
                    show_progress=False, log=lambda *_: None)
    newest, older = snapshot(store), {v: snapshot_or_gone(store, v) for v in (1, 2)}
    log = tmp_path / "reference.events"
    reference = tmp_path / "reference"
    shutil.copytree(store, reference)
    assert tlfs_vacuum(reference, {"TLFS_FAULT_LOG": str(log)}).returncode == 0
    kill_points = [number for number, kind, _, _ in events(log) if kind in ("rm", "write", "done")]
    assert len(kill_points) >= 3
    for point in kill_points:
        trial = tmp_path / f"vacuum-{point}"
        shutil.copytree(store, trial)
        killed = tlfs_vacuum(trial, {"TLFS_KILL_AT": str(point)})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert snapshot(trial) == newest, f"kill point {point}: the newest version changed"
        for version in (1, 2):
            assert snapshot_or_gone(trial, version) in (older[version], "gone"), f"kill point {point}: version {version} torn"
        assert tlfs_vacuum(trial, {}).returncode == 0
        assert snapshot(trial) == newest and all(snapshot_or_gone(trial, v) == "gone" for v in (1, 2))
        set_root = next(trial.glob(f"{DATASET}/*"))
        assert extract.verify(str(set_root))["bad"] == [] and not list((set_root / layout.RETIRED).rglob("*.parquet"))
        shutil.rmtree(trial)
