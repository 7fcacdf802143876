"""The DAGs run for real on a small sample of the shared CIFAR-10: first with
``airflow dags test`` (no scheduler), then with real Airflow processes and
``airflow dags trigger``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tlfs import features
from tests.conftest import noisy_images, shared_cifar_sources, write_tree
from tests.dags.conftest import REPO
from tests.faults import python_path
from tests.extraction import run_extract

pytestmark = pytest.mark.airflow


def feature_env(tmp_path) -> dict:
    sources = shared_cifar_sources()
    return {"TLFS_CIFAR10_SOURCE": ",".join(sources), "TLFS_STORE": str(tmp_path / "store"),
            "TLFS_MODELS": str(tmp_path / "models"), "TLFS_CACHE": str(tmp_path / "cache")}


def airflow(*args, env):
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    proc = subprocess.run([airflow_bin, *args], capture_output=True, text=True, timeout=900, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def query(env: dict, sql: str, *args) -> list[tuple]:
    """Rows from the Airflow database of ``env``."""
    import sqlite3

    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, args).fetchall()


def task_states(env: dict, dag_id: str) -> dict:
    return dict(query(env, "SELECT task_id, state FROM task_instance WHERE dag_id = ?", dag_id))


def run_states(env: dict, dag_id: str) -> list[str]:
    """The state of each run of ``dag_id``, oldest first."""
    return [state for (state,) in query(env, "SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id)]


def mapped_instances(env: dict, dag_id: str, task_id: str) -> int:
    return query(env, "SELECT COUNT(*) FROM task_instance WHERE dag_id = ? AND task_id = ?", dag_id, task_id)[0][0]


@pytest.mark.slow
def test_dags_test_finetune_exports_extracts_and_commits(tmp_path, airflow_env):
    env = {**airflow_env, **feature_env(tmp_path)}
    airflow("db", "migrate", env=env)
    conf = {"limit": 30, "device": "cpu", "head_epochs": 1, "epochs": 1, "train_batch_size": 16, "layers": ["head"]}
    airflow("dags", "test", "finetune_cifar10", "-c", json.dumps(conf), env=env)
    assert run_states(env, "finetune_cifar10") == ["success"]
    assert set(task_states(env, "finetune_cifar10").values()) == {"success"}
    listed = features.list_sets(env["TLFS_STORE"])
    version = listed.loc[0, "backbone_version"]
    card = json.loads((Path(env["TLFS_MODELS"]) / version / "model_card.json").read_text())
    assert card["parent"]["dataset"] == "cifar10" and card["parent"]["version"] != version
    assert listed.loc[0, "rows"] == 60 and listed.loc[0, "layers"] == ["head"]


@pytest.mark.slow
def test_dags_test_extract_then_fit_heads(tmp_path, airflow_env):
    # 4 shards, at most 3 shard tasks: one task takes two shards
    env = {**airflow_env, **feature_env(tmp_path), "TLFS_MAX_SHARD_TASKS": "3"}
    airflow("db", "migrate", env=env)
    # in int8 (the planning task quantizes the graph once; the shard tasks run the graph it names)
    conf = {"limit": 60, "shard_size": 40, "layers": ["block15", "head"], "codec": "zstd", "precision": "int8"}
    airflow("dags", "test", "extract_cifar10", "-c", json.dumps(conf), env=env)
    assert run_states(env, "extract_cifar10") == ["success"]
    assert mapped_instances(env, "extract_cifar10", "extract_shard") == 3
    states = task_states(env, "extract_cifar10")
    assert states["heads_only"] == "success" and states["trigger_finetune"] == "skipped"  # 30 per class: small
    store = env["TLFS_STORE"]
    listed = features.list_sets(store)
    assert listed.loc[0, "rows"] == 120 and listed.loc[0, "layers"] == ["block15", "head"]
    shard_file = next(Path(listed.loc[0, "uri"]).glob("layer=head/**/*.parquet"))
    assert pq.ParquetFile(shard_file).metadata.row_group(0).column(3).compression == "ZSTD"  # the run's codec param
    frame = features.load("cifar10", "efficientnet_lite0", "head", "test", store)
    assert len(frame) == 60 and frame["features"].iloc[0].shape == (1280,)
    lineage = features.describe("cifar10", "efficientnet_lite0", store)["lineage"]
    card = json.loads((Path(env["TLFS_MODELS"]) / listed.loc[0, "backbone_version"] / "model_card.json").read_text())
    assert lineage["runtime"]["precision"] == "int8" and lineage["onnx_file_sha256"] == card["variants"]["int8"]["sha256"]
    airflow("dags", "test", "fit_heads_cifar10", "-c", json.dumps({"heads": ["softmax"], "checks": False}), env=env)
    heads = Path(listed.loc[0, "uri"]) / "_heads"
    fitted = task_states(env, "fit_heads_cifar10")  # with the checks param off, the two checks are skipped
    assert (fitted["near_copies"], fitted["label_issues"], fitted["report"]) == ("skipped", "skipped", "success")
    assert not (heads / "near_copies.json").exists() and not (heads / "label_issues.json").exists()
    sweep = json.loads((heads / "sweep.json").read_text())
    assert set(sweep["layers"]) == {"block15", "head"}
    metrics = json.loads((heads / f"softmax-{sweep['best_layer']}" / "metrics.json").read_text())
    # 60 test images, 6 per class: a constant predictor scores 10 %; real features do far better
    assert metrics["test_accuracy"] >= 0.4, metrics["test_accuracy"]
    assert len(set(map(tuple, metrics["confusion_matrix"]))) > 1 and sum(map(sum, metrics["confusion_matrix"])) == 60
    # the best head ships as one ONNX classifier beside it, which onnxruntime runs alone
    import onnxruntime as ort

    shipped = ort.InferenceSession(str(heads / f"softmax-{sweep['best_layer']}" / "classifier.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert json.loads(shipped.get_modelmeta().custom_metadata_map["tlfs.test_accuracy"]) == metrics["test_accuracy"]
    # and the softmax head's learning curve on that layer, which the advisor shows
    curve = json.loads((heads / f"learning_curve-softmax-{sweep['best_layer']}.json").read_text())
    assert curve["points"][-1]["images"] == metrics["n_train"] and curve["plan_id"] == sweep["plan_id"]

    # the next scheduled run over a grown source: only the new images are extracted, and
    # the run says so in its logs and in the Asset event; the heads then fit the new version
    conf["limit"] = 70  # 10 more images per split (the sample keeps the 60 it had)
    out = airflow("dags", "test", "extract_cifar10", "-c", json.dumps(conf), env=env)
    assert "20 new, 0 changed, 0 removed, 120 reused" in out
    extra = json.loads(asset_extras(env)[-1])
    assert {k: extra[k] for k in ("version", "added", "changed", "removed", "reused", "rows")} == \
        {"version": 2, "added": 20, "changed": 0, "removed": 0, "reused": 120, "rows": 140}
    # this time with balanced heads (the fit DAG's balanced param): chosen and shipped by balanced accuracy,
    # and a folder of images waiting for labels: the shipped head's least sure of them saved as the queue
    incoming = write_tree(tmp_path / "incoming", noisy_images(per_class=2))
    airflow("dags", "test", "fit_heads_cifar10", "-c", json.dumps({"heads": ["softmax"], "balanced": True,
                                                                   "unlabelled": [str(incoming)], "label_next": 5}), env=env)
    queue = pd.read_csv(heads / "label_next.csv")
    assert len(queue) == 5 and queue["rank"].tolist() == [1, 2, 3, 4, 5] and queue["margin"].is_monotonic_increasing
    assert all(image.startswith(str(incoming)) for image in queue["image"]) and (heads / "label_next.png").exists()
    page = (heads / "report.html").read_text()  # the report task's page, of this fit: its queue included
    assert "The 5 images the shipped head is least sure of" in page and "version 2</title>" in page
    newest = features.open_set("cifar10", "efficientnet_lite0", store)
    swept = json.loads((heads / "sweep.json").read_text())
    assert newest.version == 2 and swept["plan_id"] == newest.plan_id
    assert swept["balanced"] is True and swept["chosen_by"] == "validation_balanced_accuracy"
    balanced_head = heads / f"softmax-{swept['best_layer']}-balanced"
    assert json.loads((balanced_head / "metrics.json").read_text())["balanced"] is True
    assert (balanced_head / "classifier.onnx").exists()
    checked = json.loads((heads / "near_copies.json").read_text())  # the near_copies task's check, with the shipped head
    assert (checked["version"], checked["images"], checked["head"]["name"]) == (2, 70, balanced_head.name)
    assert "Is the test split honest?</h2><p><b>" in page and "Labels that look wrong</h2><p><b>" in page
    doubted = json.loads((heads / "label_issues.json").read_text())  # the label_issues task's, on the sweep's layer
    assert (doubted["version"], doubted["images"], doubted["layers"]) == (2, 70, [swept["best_layer"]])


def asset_extras(env: dict) -> list[str]:
    return [extra for (extra,) in query(env, "SELECT extra FROM asset_event ORDER BY id")]


@pytest.mark.slow
def test_extract_triggers_finetune_when_the_advisor_finds_the_dataset_large(tmp_path, airflow_env):
    """`finetune: auto` (the default) follows the advisor: with the run's `large_per_class`
    at 3, a sample of 3 training images per class is large, and the run takes the
    fine-tuning branch; a finetune_cifar10 run is created with the extraction's settings
    (it runs when a scheduler picks it up)."""
    env = {**airflow_env, **feature_env(tmp_path)}
    airflow("db", "migrate", env=env)
    conf = {"limit": 30, "shard_size": 40, "layers": ["head"], "finetune_device": "cpu", "large_per_class": 3}
    out = airflow("dags", "test", "extract_cifar10", "-c", json.dumps(conf), env=env)
    assert "advice: large_similar" in out or "advice: large_different" in out, out[-3000:]
    states = task_states(env, "extract_cifar10")
    assert states["trigger_finetune"] == "success" and states["heads_only"] == "skipped"
    rows = query(env, "SELECT conf FROM dag_run WHERE dag_id = 'finetune_cifar10'")
    assert len(rows) == 1
    triggered = rows[0][0] if isinstance(rows[0][0], str) else rows[0][0].decode()
    assert '"device": "cpu"' in triggered and '"limit": 30' in triggered


@pytest.mark.slow
def test_real_airflow_processes_trigger_retry_a_killed_task_and_stop(tmp_path, airflow_env, monkeypatch):
    """Real scheduler, dag-processor and api-server; ``airflow dags trigger``. One shard
    task is SIGKILLed while writing its first file (tests/faults); Airflow retries it and
    the committed set equals an uninterrupted extraction row for row. The commit's Asset
    event starts fit_heads_cifar10, whose heads beat a constant predictor (its label check
    skipped: too few images a class to check labels); a second, unchanged extraction's event
    starts a fit that is skipped."""
    import psutil

    sys.path.insert(0, str(REPO / "scripts"))
    from airflow_local import LocalAirflow, RunFailed

    marker = tmp_path / "killed-once"
    faults = {"PYTHONPATH": python_path(),
              "TLFS_KILL_AT": "1", "TLFS_KILL_MATCH": "part-", "TLFS_KILL_ONCE": str(marker),
              # Airflow's own cap on every retry's delay: the retry 2 s after the kill, not the DAGs' 20-40 s
              "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "2"}
    env = feature_env(tmp_path)
    conf = {"limit": 30, "shard_size": 30, "layers": ["head"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the Airflow processes inherit them; the caller's own come back after
    with LocalAirflow(tmp_path / "home", env=faults) as local:
        local.wait_for_dags(["extract_cifar10", "fit_heads_cifar10"])
        for dag_id in ("extract_cifar10", "fit_heads_cifar10"):
            local.cli("dags", "unpause", dag_id)
        run_id = local.trigger("extract_cifar10", conf)
        run = local.wait_for_run("extract_cifar10", run_id, timeout=600)
        tries = local._query("SELECT map_index, try_number, state FROM task_instance WHERE dag_id = ? AND task_id = ?",
                             "extract_cifar10", "extract_shard")
        # the commit's Asset event starts fit_heads_cifar10 ...
        fitted = local.wait_for_run("fit_heads_cifar10", timeout=600)
        # ... and a second run that changes nothing commits no new version: its event's fit is skipped
        again = local.trigger("extract_cifar10", conf)
        local.wait_for_run("extract_cifar10", again, timeout=600)
        skipped = local.wait_for_run("fit_heads_cifar10", timeout=600, known={fitted["run_id"]})
        fit_runs = {rid: (run_type, {t: st for t, st in local._query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = 'fit_heads_cifar10' AND run_id = ?", rid)})
            for rid, run_type in local._query("SELECT run_id, run_type FROM dag_run WHERE dag_id = 'fit_heads_cifar10'")}
        # a smaller sample of the set: its plan is refused at once, without retries, and the failure says why
        shrinking = local.trigger("extract_cifar10", {**conf, "limit": 20})
        with pytest.raises(RunFailed, match=r"failed\n  plan_shards: SampleShrinksSet: .* version 1 holds 20 images "
                                            r"that --limit 20 leaves out"):
            local.wait_for_run("extract_cifar10", shrinking, timeout=600)
        plan_tries = local._query("SELECT try_number FROM task_instance WHERE dag_id = 'extract_cifar10' AND run_id = ? "
                                  "AND task_id = 'plan_shards'", shrinking)
    assert plan_tries == [(1,)], plan_tries
    assert len(fit_runs) == 2, fit_runs
    assert fit_runs[fitted["run_id"]] == ("asset_triggered", {"feature_set": "success", "sweep": "success",
                                                               "fit_heads": "success", "ship_classifier": "success",
                                                               "learning_curve": "success", "label_next": "skipped",
                                                               "near_copies": "success",
                                                               # 3 training images a class: 5 folds cannot be cut
                                                               "label_issues": "skipped", "report": "success"})
    assert fit_runs[skipped["run_id"]] == ("asset_triggered", {"feature_set": "skipped", "sweep": "skipped",
                                                                "fit_heads": "skipped", "ship_classifier": "skipped",
                                                                "learning_curve": "skipped", "label_next": "skipped",
                                                                "near_copies": "skipped", "label_issues": "skipped",
                                                                "report": "skipped"})
    newest = features.open_set("cifar10", "efficientnet_lite0", env["TLFS_STORE"])
    assert newest.version == 1, "the unchanged run committed a new version"
    for head in ("softmax", "lightgbm", "mlp"):  # 30 test images, 3 per class: a constant predictor scores 10 %
        metrics = json.loads((Path(newest.uri) / "_heads" / f"{head}-head" / "metrics.json").read_text())
        assert metrics["test_accuracy"] >= 0.3, (head, metrics["test_accuracy"])
    assert run["state"] == "success"
    assert marker.exists(), "the fault was never injected"
    assert sorted(t for _, t, _ in tries) == [1, 2] and {s for *_, s in tries} == {"success"}, tries
    assert local.started_pids and not [p for p in local.started_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    store = env["TLFS_STORE"]
    assert features.list_sets(store).loc[0, "rows"] == 60
    alone = str(tmp_path / "alone")
    run_extract("cifar10", shared_cifar_sources(), "efficientnet_lite0", alone, env["TLFS_MODELS"], layers=["head"],
                limit=30, shard_size=30, cache_dir=env["TLFS_CACHE"], show_progress=False, log=lambda *_: None)
    for split in ("train", "test"):
        retried, uninterrupted = (features.load("cifar10", "efficientnet_lite0", "head", split, s) for s in (store, alone))
        assert list(retried["image_id"]) == list(uninterrupted["image_id"])
        assert all((a == b).all() for a, b in zip(retried["features"], uninterrupted["features"]))
