"""The one rule of removal: a commit removes another plan's staging, shard files and
temporary files only while no lease on that plan is live; a holder whose plan was
removed anyway learns it at its next check, in one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tlfs.features import layout, versions
from tlfs.features.errors import PlanReplaced
from tlfs.features.leases import Lease, LeaseTerms, hold, live_plans
from tlfs.features.manifest import collect_garbage, drop_released, remove_superseded

COMMITTED, LIVE, DEAD = "c" * 16, "a" * 16, "d" * 16


def plan_files(root: Path, plan_id: str) -> list[Path]:
    """What a plan leaves in a set: its staging (plan.json, a record), a shard file
    (moved into the layer folder once committed) and a temporary shard file."""
    staging = root / layout.STAGING / plan_id
    files = [staging / layout.PLAN, staging / "shards" / "00000.json",
             (root if plan_id == COMMITTED else staging / "files") / "layer=head" / "split=train" / layout.shard_name(plan_id, 0),
             staging / "files" / "layer=head" / "split=train" / f".{layout.shard_name(plan_id, 1)}.0123abcd.tmp"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return files


def manifest_of(plan_id: str) -> dict:
    return {"plan_id": plan_id, "committed_at": "2026-11-27T00:00:00.000Z",
            "shards": [{"path": f"layer=head/split=train/{layout.shard_name(plan_id, 0)}"}]}


def test_a_commit_removes_a_dead_plan_and_keeps_a_live_one(tmp_path):
    root = tmp_path / "set"
    committed, live, dead = (plan_files(root, p) for p in (COMMITTED, LIVE, DEAD))
    with hold(str(root), LIVE):
        removed = collect_garbage(str(root), manifest_of(COMMITTED))
        assert all(p.exists() for p in live), "a live plan's files were removed"
    assert not any(p.exists() for p in dead), "a dead plan's files were kept"
    assert committed[0].exists() and committed[2].exists(), "the committed plan's staging or shard was removed"
    assert not committed[3].exists(), "a temporary file of a plan nobody holds was kept"
    assert removed
    collect_garbage(str(root), manifest_of(COMMITTED))  # the live run has finished meanwhile
    assert not any(p.exists() for p in live)


def test_a_commit_sets_a_superseded_plans_staging_aside_and_the_next_planning_deletes_it(tmp_path):
    """Freeing a file's blocks costs in proportion to its size, and a plan's entries list
    every image of the set: the commit moves the folder (one rename), planning deletes it."""
    root = tmp_path / "set"
    plan_files(root, COMMITTED)
    dead = plan_files(root, DEAD)
    collect_garbage(str(root), manifest_of(COMMITTED))
    assert not any(p.exists() for p in dead)
    aside = list((root / layout.SUPERSEDED).iterdir())
    assert [p.name.split(".")[0] for p in aside] == [DEAD]
    assert (aside[0] / dead[0].relative_to(root / layout.STAGING / DEAD)).read_bytes() == b"x"  # moved whole
    assert DEAD not in versions.Listing(str(root)).staging_plans  # no longer the set's
    plan_files(root, DEAD)  # the same plan planned again, and superseded again: set aside beside the first
    collect_garbage(str(root), manifest_of(COMMITTED))
    assert len(list((root / layout.SUPERSEDED).iterdir())) == 2
    assert remove_superseded(str(root)) == 2
    assert not (root / layout.SUPERSEDED).exists() and remove_superseded(str(root)) == 0
    assert (root / layout.STAGING / COMMITTED / layout.PLAN).exists(), "the committed plan's staging was set aside"


def test_a_lease_that_ran_out_protects_nothing(tmp_path):
    root = tmp_path / "set"
    files = plan_files(root, LIVE)
    lease = Lease(str(root), LIVE, ttl=3).acquire()
    lease._stop.set()  # a stopped process: it renews no more
    lease._renewer.join()
    assert LIVE in live_plans(str(root))
    deadline = time.monotonic() + 30
    while LIVE in live_plans(str(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    collect_garbage(str(root), manifest_of(COMMITTED))
    assert not any(p.exists() for p in files)
    with pytest.raises(PlanReplaced, match=f"plan {LIVE} of .* was replaced.*run the extraction again"):
        lease.check()


def test_a_task_lease_lingers_for_the_next_task_until_its_plan_is_committed(tmp_path):
    root = tmp_path / "set"
    files = plan_files(root, LIVE)
    with hold(str(root), LIVE, LeaseTerms(ttl=600, linger=3600)):
        pass
    collect_garbage(str(root), manifest_of(COMMITTED))  # another plan's commit: the queued task's plan stays
    assert all(p.exists() for p in files)
    lingering = list((root / layout.STAGING / LIVE / layout.LEASES).glob("*.json"))
    assert len(lingering) == 1 and json.loads(lingering[0].read_text())["released"] is True
    with hold(str(root), LIVE) as running:  # a task still running is not dropped
        drop_released(str(root), LIVE)  # the plan's own commit
        assert [p.name for p in (root / layout.STAGING / LIVE / layout.LEASES).glob("*.json")] == [Path(running.uri).name]
    assert live_plans(str(root)) == set()


def test_a_held_lease_notices_its_plan_was_removed(tmp_path):
    import shutil

    root = tmp_path / "set"
    plan_files(root, LIVE)
    with hold(str(root), LIVE, LeaseTerms(ttl=2)) as lease:
        lease.check()
        shutil.rmtree(root / layout.STAGING / LIVE)
        lease._renewer.join(120)  # its next renewal (every ttl/4) finds the plan gone and stops
        assert not lease._renewer.is_alive() and lease.lost, "the renewer kept renewing a removed plan"
        with pytest.raises(PlanReplaced):
            lease.check()
    assert not list((root / layout.STAGING / LIVE).rglob("*.json")), "the lost lease was written again"


def test_a_task_of_a_plan_that_is_gone_is_refused(tmp_path):
    with pytest.raises(PlanReplaced, match="run the extraction again"):
        with hold(str(tmp_path / "set"), DEAD):
            pass


def test_the_versions_live_runs_build_on_are_read_from_their_plans_or_taken_as_known(tmp_path):
    """A commit protects the base of every live plan from its vacuum; its own plan's base
    it knows already, so that plan's ``plan.json`` (as large as its shards) is not read."""
    from tlfs.features.leases import live_bases

    root = tmp_path / "set"
    for plan_id, base in ((LIVE, 3), (COMMITTED, 5)):
        (root / layout.STAGING / plan_id).mkdir(parents=True)
        (root / layout.STAGING / plan_id / layout.PLAN).write_text(json.dumps({"plan_id": plan_id, "base": {"version": base}}))
    assert live_bases(str(root), {LIVE, COMMITTED}) == {3, 5}
    (root / layout.STAGING / COMMITTED / layout.PLAN).write_text("{ not read")
    assert live_bases(str(root), {LIVE, COMMITTED}, known={COMMITTED: {"version": 5}}) == {3, 5}
    assert live_bases(str(root), {LIVE, COMMITTED}, known={COMMITTED: None}) == {3}  # a full run builds on nothing
