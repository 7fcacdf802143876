"""Every DAG file parses without importing the heavy libraries; every Param refuses what it must."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.dags.conftest import DAGS, airflow_home

pytestmark = pytest.mark.airflow

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {k: v[-400:] for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
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


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """This repo's dags/ as a DagBag sees it, parsed once for the tests that only read it."""
    return parse(airflow_home(tmp_path_factory.mktemp("parsed") / "airflow"))


def test_dag_files_import_without_errors_and_without_heavy_libraries(parsed):
    result = parsed
    assert result["errors"] == {}
    assert {"extract_cifar10", "fit_heads_cifar10", "finetune_cifar10"} <= set(result["dags"])
    assert result["heavy"] == []


def test_extract_dag_shape(parsed):
    result = parsed
    assert result["tasks"]["extract_cifar10"] == ["advise", "choose", "commit", "export_backbone", "extract_shard",
                                                  "finetune_conf", "heads_only", "plan_shards", "trigger_finetune"]
    assert result["tasks"]["finetune_cifar10"] == ["commit", "extract_shard", "finetune", "plan_shards"]
    assert "tlfs_extract" in result["pools"]


def test_the_finetune_dag_offers_every_finetune_setting_with_the_clis_default(parsed):
    from dataclasses import fields

    from tlfs.models.names import BACKBONES
    from tlfs.pipeline.cli import build_parser
    from tlfs.pipeline.config import FinetuneConfig, Settings

    params = parsed["params"]
    names = {"batch_size": "train_batch_size"}  # batch_size is the extraction's in the DAG
    cli = build_parser().parse_args(["finetune", "--dataset", "d", "--backbone", "resnet50"])
    for f in fields(FinetuneConfig):
        assert params["finetune_cifar10"][names.get(f.name, f.name)] == f.default == getattr(cli, f.name), f.name
    assert params["extract_cifar10"]["shard_size"] == Settings.shard_size
    assert params["extract_cifar10"]["backbone"] in BACKBONES


def test_a_spec_file_adds_a_dataset_dag_pair(airflow_env, tmp_path):
    result = parse_with_spec(airflow_env, tmp_path, "guitars.yaml",
                             "name: guitars\nsources: [/data/guitars.zip]\nschedule: '@weekly'\nbalanced: true\n")
    assert result["errors"] == {} and {"extract_guitars", "fit_heads_guitars", "finetune_guitars"} <= set(result["dags"])
    assert result["params"]["fit_heads_guitars"]["balanced"] is True  # a scheduled fit takes the spec's
    assert result["params"]["fit_heads_cifar10"]["balanced"] is False


def test_a_bad_spec_is_one_import_error_naming_it_and_the_other_datasets_dags_still_load(airflow_env, tmp_path):
    result = parse_with_spec(airflow_env, tmp_path, "flowers.yaml", "name: flowers\nsources: [s3://b/f.tar]\nlimit: abc\n")
    assert len(result["errors"]) == 1, result["errors"]
    ((where, error),) = result["errors"].items()
    assert where.endswith("dataset_specs.py")
    assert "flowers.yaml:3: key 'limit': expected null or an integer > 0, got 'abc'" in error
    assert {"extract_cifar10", "fit_heads_cifar10", "finetune_cifar10"} <= set(result["dags"])
    assert not [d for d in result["dags"] if "flowers" in d]


def test_a_task_whose_plan_was_replaced_or_whose_set_cannot_fit_a_head_fails_without_retrying(airflow_env):
    """Retrying cannot bring back a plan another run's commit removed, nor give a set of one
    class a second: the task fails at once (AirflowFailException), with the product's
    one-line reason."""
    sys.path.insert(0, str(DAGS))
    try:
        from airflow.sdk.exceptions import AirflowFailException

        from tlfs.features.errors import PlanReplaced
        from tlfs_dags.factory import _no_retry_when_final

        with pytest.raises(AirflowFailException, match="was replaced"):
            with _no_retry_when_final():
                raise PlanReplaced("plan 0123 of store/x was replaced: another run's commit removed its staging")
        from tlfs.pipeline.fit import validation_split

        with pytest.raises(AirflowFailException, match="all of one class"):  # the sweep task of a one-class set
            with _no_retry_when_final():
                validation_split(np.zeros(12, dtype=int))
        with pytest.raises(ValueError):  # anything else is left to Airflow's retries
            with _no_retry_when_final():
                raise ValueError("transient")
    finally:
        sys.path.remove(str(DAGS))


PARAMS_PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamValidationError
bag = DagBag(dag_folder=sys.argv[1])
cases = json.loads(sys.argv[2])
def refused(param, value):
    try:
        param.resolve(value)
    except ParamValidationError:
        return True
    return False
print(json.dumps({dag_id: {name: {"refused": [refused(dag.params.get_param(name), v) for v in cases.get(name, {}).get("bad", [])],
                                  "accepted": [not refused(dag.params.get_param(name), v) for v in cases.get(name, {}).get("good", [])],
                                  "covered": name in cases}
                           for name in dag.params}
                  for dag_id, dag in bag.dags.items() if dag_id.endswith("_cifar10")}))
"""

# every Param of every DAG: values it must refuse when a run is triggered, and values it must take
PARAM_CASES = {
    "backbone": {"bad": ["resnet51", 3, None, "timm/", "timm/../x", "timm/Resnet18"],
                 "good": ["resnet50", "efficientnet_lite0_2x2", "efficientnet_lite2", "timm/resnet18",
                          "timm/vit_small_patch14_dinov2.lvd142m", "timm/convnext_tiny_2x2"]},
    "layers": {"bad": ["head", [3]], "good": [None, ["head"]]},
    "splits": {"bad": ["test", [1]], "good": [None, ["train"]]},
    "sources": {"bad": ["/data/x.tar", [1]], "good": [[], ["/data/x.tar"]]},
    "store": {"bad": [3, ["s"]], "good": [None, "s3://b/store"]},
    "models": {"bad": [3], "good": [None, "/models"]},
    "device": {"bad": ["tpu", None], "good": ["cpu", "cuda"]},
    "precision": {"bad": ["fp8", 16], "good": [None, "fp16", "int8"]},
    "batch_size": {"bad": [-1, "64", 2.5], "good": [None, 0, 64]},  # 0, like null: the device's
    "shard_size": {"bad": [0, None, "x"], "good": [100]},
    "decode_workers": {"bad": [-1, "two"], "good": [None, 0, 2]},
    "codec": {"bad": ["gzip", 1], "good": [None, "zstd", "none"]},
    "limit": {"bad": [0, -5, "abc"], "good": [None, 1]},
    "bit_depth": {"bad": [7, 17, "12"], "good": [None, 8, 12, 16]},
    "views": {"bad": [["rotate"], "flip"], "good": [[], ["flip"]]},
    "incremental": {"bad": ["yes", 1], "good": [True, False]},
    "finetune": {"bad": ["maybe", True], "good": ["auto", "never", "always"]},
    "finetune_device": {"bad": ["tpu"], "good": ["cpu"]},
    "heads": {"bad": [["svm"], "softmax"], "good": [["softmax", "mlp"]]},
    "balanced": {"bad": ["yes", 1], "good": [True, False]},
    "unlabelled": {"bad": ["/data/incoming", [1]], "good": [[], ["/data/incoming", "s3://b/new/*.jpg"]]},
    "label_next": {"bad": [0, "100", 2.5], "good": [1, 500]},
    "checks": {"bad": ["no", 0], "good": [True, False]},
    "freeze": {"bad": [3, "abc", "-1"], "good": ["none", "all", "4"]},
    "head_epochs": {"bad": [-1, 1.5], "good": [0, 2]},
    "head_lr": {"bad": [0, -0.1], "good": [0.001]},
    "epochs": {"bad": [-1], "good": [0, 8]},
    "lr": {"bad": [0.0, -1], "good": [0.02]},
    "momentum": {"bad": [-0.1], "good": [0, 0.9]},
    "schedule": {"bad": ["linear"], "good": ["cosine"]},
    "train_batch_size": {"bad": [0], "good": [128]},
    "patience": {"bad": [0], "good": [3]},
    "from_scratch": {"bad": ["no"], "good": [False]},
    "label_smoothing": {"bad": [-0.1], "good": [0.1]},
    "weight_decay": {"bad": [-1e-4], "good": [5e-4]},
    "seed": {"bad": ["one"], "good": [0, 7]},
    "large_per_class": {"bad": [0, "many"], "good": [1, 1000]},
    "similar_score": {"bad": [0, 1.5, "high"], "good": [0.35, 1]},
}


def test_every_dag_param_refuses_bad_values_and_takes_good_ones(airflow_env):
    import os

    out = subprocess.run([sys.executable, "-c", PARAMS_PROBE, str(DAGS), json.dumps(PARAM_CASES)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, **airflow_env})
    assert out.returncode == 0, out.stderr[-2000:]
    checked = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(checked) == {"extract_cifar10", "fit_heads_cifar10", "finetune_cifar10"}
    for dag_id, params in checked.items():
        for name, result in params.items():
            assert result["covered"], f"{dag_id}: Param {name!r} has no case in PARAM_CASES"
            bad, good = PARAM_CASES[name]["bad"], PARAM_CASES[name]["good"]
            assert all(result["refused"]), f"{dag_id}.{name} took {[v for v, r in zip(bad, result['refused']) if not r]}"
            assert all(result["accepted"]), f"{dag_id}.{name} refused {[v for v, a in zip(good, result['accepted']) if not a]}"
