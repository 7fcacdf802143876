"""The two DAG shapes, built from a dataset spec.

extract_<name>:  export_backbone -> plan_shards -> extract_shard (mapped, pool
                 ``tlfs_extract``) -> commit (emits the feature set's Asset)
fit_heads_<name>: scheduled on that Asset: layer sweep, then heads on the best layer
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from tlfs_dags.specs import DatasetSpec

BACKBONES = ["efficientnet_lite0", "resnet50", "vgg16", "inception_v3"]  # models/names.py
EXTRACT_POOL = "tlfs_extract"  # bounds concurrent (GPU) extraction: `airflow pools set tlfs_extract N ...`
# Celery queue of the shard tasks: "gpu" in the compose deployment, so that only GPU
# workers (celery worker --queues gpu) take them; read when the DAG file is parsed.
EXTRACT_QUEUE = os.environ.get("TLFS_EXTRACT_QUEUE", "default")
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
}


def features_asset(dataset: str) -> Asset:
    return Asset(name=f"tlfs_features_{dataset}", uri=f"tlfs://features/{dataset}")


def _log(message: str) -> None:
    print(message, flush=True)  # task stdout goes to the task log


def _nullable(kind: str, **schema):
    return {"type": [kind, "null"], **schema}


def extract_params(spec: DatasetSpec) -> dict:
    return {
        "backbone": Param(spec.backbone, type="string", enum=BACKBONES, description="backbone name"),
        "layers": Param(spec.layers, **_nullable("array", items={"type": "string"}), description="tap layers (null: all)"),
        "splits": Param(spec.splits, **_nullable("array", items={"type": "string"}), description="splits (null: all)"),
        "sources": Param(spec.sources, type="array", items={"type": "string"},
                         description="dataset source URIs ([]: the dataset's default source)"),
        "store": Param(None, **_nullable("string"), description="feature store URI (null: TLFS_STORE or default)"),
        "models": Param(None, **_nullable("string"), description="model artifacts URI (null: TLFS_MODELS or default)"),
        "device": Param("cpu", type="string", enum=["cpu", "cuda"]),
        "batch_size": Param(64, type="integer", minimum=1),
        "shard_size": Param(2500, type="integer", minimum=1),
        "limit": Param(spec.limit, **_nullable("integer", minimum=1), description="class-balanced sample per split"),
    }


def build_extract_dag(spec: DatasetSpec):
    asset = features_asset(spec.name)

    @dag(
        dag_id=f"extract_{spec.name}",
        description=spec.description or f"extract features of {spec.name}",
        schedule=spec.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=extract_params(spec),
        default_args=DEFAULT_ARGS,
        tags=["tlfs", "extract"],
        doc_md=__doc__,
    )
    def extract_dag():
        @task
        def export_backbone() -> dict:
            from pipeline import steps

            p = get_current_context()["params"]
            return steps.export_backbone(p["backbone"], p["models"], log=_log)

        @task
        def plan_shards(exported: dict) -> list[dict]:
            """One job per shard: what each mapped extract_shard task receives."""
            from pipeline import steps

            p = get_current_context()["params"]
            planned = steps.plan_extraction(spec.name, p["backbone"], p["sources"], p["layers"], p["splits"], p["limit"],
                                            p["store"], p["models"], p["batch_size"], p["shard_size"], log=_log)
            _log(f"{planned['images']} images in {len(planned['shards'])} shards -> {planned['set_uri']}")
            return [{"set_uri": planned["set_uri"], "plan_id": planned["plan_id"], "shard": n} for n in planned["shards"]]

        @task(pool=EXTRACT_POOL, queue=EXTRACT_QUEUE, retries=3)
        def extract_shard(job: dict) -> dict:
            from pipeline import steps

            result = steps.extract_shard(job["set_uri"], job["plan_id"], job["shard"], device=get_current_context()["params"]["device"])
            _log(f"shard {job['shard']}: {result}")
            return result

        @task(outlets=[asset])
        def commit(jobs: list[dict], shard_results: list[dict]) -> dict:
            from pipeline import steps

            set_uri, plan_id = jobs[0]["set_uri"], jobs[0]["plan_id"]
            summary = steps.commit_extraction(set_uri, plan_id, log=_log)
            p = get_current_context()["params"]
            get_current_context()["outlet_events"][asset].extra = {
                "set_uri": set_uri, "backbone_version": summary["backbone_version"], "store": p["store"],
                "rows": summary["rows"],
            }
            return summary

        jobs = plan_shards(export_backbone())
        commit(jobs, extract_shard.expand(job=jobs))

    return extract_dag()


def build_fit_dag(spec: DatasetSpec):
    asset = features_asset(spec.name)

    @dag(
        dag_id=f"fit_heads_{spec.name}",
        description=f"layer sweep and heads on the features of {spec.name}",
        schedule=[asset],
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params={
            "backbone": Param(spec.backbone, type="string", description="backbone name or version (when run by hand)"),
            "store": Param(None, **_nullable("string")),
            "heads": Param(["softmax", "lightgbm", "mlp"], type="array", items={"type": "string", "enum": ["softmax", "lightgbm", "mlp"]}),
        },
        default_args=DEFAULT_ARGS,
        tags=["tlfs", "heads"],
    )
    def fit_dag():
        @task
        def feature_set() -> dict:
            """The set that triggered this run (from the Asset event), else the params."""
            context = get_current_context()
            p = context["params"]
            events = context.get("triggering_asset_events") or {}
            for event_list in events.values():
                if event_list:
                    extra = event_list[-1].extra or {}
                    return {"backbone": extra.get("backbone_version", p["backbone"]), "store": extra.get("store", p["store"])}
            return {"backbone": p["backbone"], "store": p["store"]}

        @task
        def sweep(target: dict) -> dict:
            from pipeline import steps

            return steps.sweep_layers(spec.name, target["backbone"], target["store"], log=_log)

        @task
        def fit_heads(target: dict, swept: dict) -> list[dict]:
            from pipeline import steps

            heads = get_current_context()["params"]["heads"]
            return [steps.fit_head(spec.name, target["backbone"], [swept["best_layer"]], h, target["store"], log=_log) for h in heads]

        target = feature_set()
        fit_heads(target, sweep(target))

    return fit_dag()
