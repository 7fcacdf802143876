"""What another run's commit may remove, removed at every step of a live run.

A commit removes another plan's files only while no lease on it is live
(features/leases.py); a run whose plan was removed anyway must say so in one line and
lose nothing. Here each kind of path a commit could remove (shard files, shard records,
``plan.json``, the whole staging, the leases, temporary files, the manifest) is removed
at each storage event of ``tlfs extract``'s run in turn, in-process and deterministically
(tests/faults counts the events). Every outcome is one of two:

- the run succeeds, and the committed set equals an undisturbed run's;
- the run stops with one clear line (:class:`PlanReplaced`, or "run the extraction
  again"), never a bare ``OSError``; then running it again gives that same set.

Removing ``plan.json`` or the staging before the commit's check always ends in
:class:`PlanReplaced`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.errors import PlanReplaced
from tlfs.pipeline import extract
from tlfs.pipeline.errors import PipelineError
from tests.conftest import folder_images, write_tree
from tests.faults import install
from tests.extraction import run_extract

pytestmark = pytest.mark.faults

DATASET, BACKBONE, LAYERS = "removal", "efficientnet_lite0", ["head"]


def run(source: Path, store: Path, models: str, limit: int | None = None) -> dict:
    return run_extract(DATASET, [str(source)], BACKBONE, str(store), models, layers=LAYERS, limit=limit, shard_size=4,
                       batch_size=4, threads=1, show_progress=False, log=lambda *_: None)


def snapshot(store: Path) -> dict:
    out = {}
    for split in ("train", "test"):
        frame = features.load(DATASET, BACKBONE, "head", split, str(store))
        out[split] = (list(frame["image_id"]), b"".join(v.tobytes() for v in frame["features"]))
    return out


def set_root(store: Path) -> Path:
    return next(p for p in (store / DATASET).iterdir() if p.is_dir())


def remover(kind: str, store: Path, older_plan: str):
    """The paths of ``kind`` that belong to the run's plan (or, for the manifest, to the
    committed set), found at the moment of removal."""
    def paths() -> list[Path]:
        root = set_root(store)
        staging_root = root / layout.STAGING
        plans = [p.name for p in staging_root.iterdir() if p.name != older_plan] if staging_root.exists() else []
        staging = staging_root / plans[0] if plans else None
        if kind == "manifest":
            return [root / layout.MANIFEST]
        if kind == "temporary files":
            return list(root.rglob(".*.tmp"))
        if staging is None:
            return []
        return {
            "shard files": lambda: list(root.glob(f"layer=*/split=*/part-{plans[0][:8]}-*.parquet"))
            + list((staging / "files").rglob("part-*.parquet")),  # written into staging, moved in by the commit
            "shard records": lambda: list((staging / "shards").glob("*.json")),
            "plan.json": lambda: [staging / layout.PLAN],
            "staging": lambda: [staging],
            "leases": lambda: list((staging / layout.LEASES).glob("*.json")),
        }[kind]()

    def remove() -> int:
        removed = 0
        for path in paths():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            elif path.exists():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    return remove


KINDS = ["shard files", "shard records", "plan.json", "staging", "leases", "temporary files", "manifest"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, models_root):
    """A store that holds an older committed set (a smaller sample), the undisturbed
    result of the run under test, and the run's storage events."""
    from tlfs.models.export import export

    export(BACKBONE, models_root, log=lambda *_: None)
    base = tmp_path_factory.mktemp("removal")
    source = write_tree(base / "images", folder_images(per_class=2))  # 6 images per split: 2 shards each
    template = base / "template"
    run(source, template, models_root, limit=3)
    older_plan = features.describe(DATASET, BACKBONE, str(template))["plan_id"]
    reference_store = base / "reference"
    shutil.copytree(template, reference_store)
    events: list[tuple[int, str, str]] = []
    with pytest.MonkeyPatch.context() as patch:
        install({}, patch=patch.setattr, action=lambda n, kind, path: events.append((n, kind, path)))
        run(source, reference_store, models_root)
    return {"source": source, "template": template, "older_plan": older_plan, "events": events,
            "reference": snapshot(reference_store), "manifest_event": max(n for n, kind, path in events
                                                                          if kind == "done" and path.endswith(layout.MANIFEST))}


def steps_for(kind: str, world: dict) -> list[int]:
    """Temporary files exist only mid-write (the ``rename`` events); other paths are
    removed after each completed write and before each delete. Once the manifest is
    written, the shard files and the manifest are the committed set's, which no commit
    of another plan removes without replacing the manifest: those two kinds stop there."""
    wanted = ("rename",) if kind == "temporary files" else ("done", "rm")
    last = world["manifest_event"] - 1 if kind in ("shard files", "manifest") else len(world["events"])
    return [n for n, k, _ in world["events"] if k in wanted and n <= last]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_path_removed_at_any_step_of_a_live_run_ends_whole_or_in_one_clear_line(kind, world, models_root, tmp_path):
    tally = {"steps": 0, "removed": 0, "succeeded": 0, "stopped clearly": 0}
    for step in steps_for(kind, world):
        store = tmp_path / f"step-{step}"
        shutil.copytree(world["template"], store)
        remove, fired = remover(kind, store, world["older_plan"]), []

        def action(n: int, _kind: str, _path: str) -> None:
            if n == step:
                fired.append(remove())

        outcome = None
        with pytest.MonkeyPatch.context() as patch:
            install({}, patch=patch.setattr, action=action)
            try:
                run(world["source"], store, models_root)
                outcome = "succeeded"
            except PlanReplaced as exc:
                assert len(str(exc).splitlines()) == 1 and "run the extraction again" in str(exc)
                outcome = "replaced"
            except PipelineError as exc:
                assert len(str(exc).splitlines()) == 1 and "run the extraction again" in str(exc), exc
                outcome = "stopped"
        assert fired, f"step {step} was never reached"
        tally["steps"] += 1
        tally["removed"] += bool(fired[0])
        before_check = step < world["manifest_event"]
        if kind in ("plan.json", "staging") and fired[0] and before_check:
            assert outcome == "replaced", f"{kind} removed at step {step}: the run {outcome}"
        if outcome == "succeeded":
            tally["succeeded"] += 1
        else:
            tally["stopped clearly"] += 1
            run(world["source"], store, models_root)  # what the line tells the user to do
        assert snapshot(store) == world["reference"], f"{kind} removed at step {step}: the set differs"
        assert extract.verify(str(set_root(store)))["bad"] == []
        shutil.rmtree(store)
    print(f"\n{kind}: {json.dumps(tally)}")
    assert tally["removed"] > 0, f"no {kind} was there to remove at any step"
