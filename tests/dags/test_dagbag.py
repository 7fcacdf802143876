"""Every DAG file parses, quickly, without importing the heavy libraries."""

import json
import subprocess
import sys

from tests.dags.conftest import DAGS

PROBE = r"""
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {k: v[-400:] for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "seconds": time.perf_counter() - started,
    "heavy": [m for m in ("torch", "onnxruntime", "pandas", "pyarrow", "sklearn", "lightgbm") if m in sys.modules],
    "tasks": {d: sorted(t.task_id for t in bag.dags[d].tasks) for d in bag.dags},
    "pools": sorted({t.pool for d in bag.dags.values() for t in d.tasks}),
    "params": {d: bag.dags[d].params.dump() for d in bag.dags},
}))
"""


def parse(airflow_env, dags=DAGS):
    import os

    out = subprocess.run([sys.executable, "-c", PROBE, str(dags)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **airflow_env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_with_spec(airflow_env, tmp_path, name: str, spec: str):
    """Parse a copy of dags/ with one more dataset spec file."""
    import shutil

    dags = tmp_path / "dags"
    shutil.copytree(DAGS, dags)
    (dags / "datasets" / name).write_text(spec)
    return parse(airflow_env, dags)


def test_dag_files_import_without_errors_and_without_heavy_libraries(airflow_env):
    result = parse(airflow_env)
    assert result["errors"] == {}
    assert {"extract_cifar10", "fit_heads_cifar10", "finetune_cifar10"} <= set(result["dags"])
    assert result["heavy"] == []
    assert result["seconds"] < 30


def test_extract_dag_shape(airflow_env):
    result = parse(airflow_env)
    assert result["tasks"]["extract_cifar10"] == ["advise", "choose", "commit", "export_backbone", "extract_shard",
                                                  "finetune_conf", "heads_only", "plan_shards", "trigger_finetune"]
    assert result["tasks"]["finetune_cifar10"] == ["commit", "extract_shard", "finetune", "plan_shards"]
    assert "tlfs_extract" in result["pools"]


def test_the_finetune_dag_offers_every_finetune_setting_with_the_clis_default(airflow_env):
    from dataclasses import fields

    from tlfs.models.names import BACKBONES
    from tlfs.pipeline.cli import build_parser
    from tlfs.pipeline.config import FinetuneConfig, Settings

    params = parse(airflow_env)["params"]
    names = {"batch_size": "train_batch_size"}  # batch_size is the extraction's in the DAG
    cli = build_parser().parse_args(["finetune", "--dataset", "d", "--backbone", "resnet50"])
    for f in fields(FinetuneConfig):
        assert params["finetune_cifar10"][names.get(f.name, f.name)] == f.default == getattr(cli, f.name), f.name
    assert params["extract_cifar10"]["shard_size"] == Settings.shard_size
    assert params["extract_cifar10"]["backbone"] in BACKBONES


def test_a_spec_file_adds_a_dataset_dag_pair(airflow_env, tmp_path):
    result = parse_with_spec(airflow_env, tmp_path, "guitars.yaml", "name: guitars\nsources: [/data/guitars.zip]\nschedule: '@weekly'\n")
    assert result["errors"] == {} and {"extract_guitars", "fit_heads_guitars", "finetune_guitars"} <= set(result["dags"])


def test_bad_spec_is_an_import_error_naming_the_file(airflow_env, tmp_path):
    result = parse_with_spec(airflow_env, tmp_path, "bad.yaml", "name: bad\n")
    assert any("bad.yaml: 'sources' is required" in e for e in result["errors"].values())


def test_a_task_whose_plan_was_replaced_fails_without_retrying(airflow_env):
    """Retrying cannot bring back a plan another run's commit removed: the task fails
    at once (AirflowFailException), with the product's one-line reason."""
    import pytest

    sys.path.insert(0, str(DAGS))
    try:
        from airflow.sdk.exceptions import AirflowFailException

        from tlfs.features.errors import PlanReplaced
        from tlfs_dags.factory import _no_retry_when_final

        with pytest.raises(AirflowFailException, match="was replaced"):
            with _no_retry_when_final():
                raise PlanReplaced("plan 0123 of store/x was replaced: another run's commit removed its staging")
        with pytest.raises(ValueError):  # anything else is left to Airflow's retries
            with _no_retry_when_final():
                raise ValueError("transient")
    finally:
        sys.path.remove(str(DAGS))


BOUNDS_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from airflow.sdk.definitions.param import ParamValidationError
from tlfs_dags.factory import finetune_config_params
params = finetune_config_params()
def refused(name, value):
    try:
        params[name].resolve(value)
    except ParamValidationError:
        return True
    return False
print(json.dumps({"lr_0": refused("lr", 0.0), "epochs_-1": refused("epochs", -1), "epochs_0": refused("epochs", 0),
                  "train_batch_size_0": refused("train_batch_size", 0), "schedule_linear": refused("schedule", "linear"),
                  "lr_0.02": refused("lr", 0.02)}))
"""


def test_the_finetune_dag_refuses_out_of_range_settings_when_triggered(airflow_env):
    import os

    out = subprocess.run([sys.executable, "-c", BOUNDS_PROBE, str(DAGS)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **airflow_env})
    assert out.returncode == 0, out.stderr[-2000:]
    refused = json.loads(out.stdout.strip().splitlines()[-1])
    assert refused == {"lr_0": True, "epochs_-1": True, "epochs_0": False, "train_batch_size_0": True,
                       "schedule_linear": True, "lr_0.02": False}
