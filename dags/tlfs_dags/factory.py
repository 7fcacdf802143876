"""The three DAG shapes, built from a dataset spec.

extract_<name>:  export_backbone -> plan_shards -> extract_shard (mapped, pool
                 ``tlfs_extract``) -> commit (emits the feature set's Asset)
                 -> advise -> choose: large datasets -> trigger_finetune, small -> heads_only
fit_heads_<name>: scheduled on that Asset: layer sweep, then heads on the best layer
finetune_<name>: finetune (GPU queue; a retried task resumes from its checkpoint)
                 -> plan_shards -> extract_shard (mapped) -> commit (the same Asset, so
                 fit_heads_<name> then fits heads on the fine-tuned features)
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tlfs.models.names import BACKBONE_HELP, BACKBONE_NAME, BACKBONE_OR_VERSION, EXTRA_VIEWS, HEADS
from tlfs.pipeline.advise import LARGE_IMAGES_PER_CLASS, SIMILAR_SCORE
from tlfs.pipeline.config import Settings, setting_help
from tlfs.pipeline.image_decode import BIT_DEPTHS
from tlfs_dags.params import finetune_config_of, finetune_config_params, setting_param
from tlfs_dags.specs import DatasetSpec

EXTRACT_POOL = "tlfs_extract"  # bounds concurrent (GPU) extraction: `airflow pools set tlfs_extract N ...`
# Celery queue of the shard tasks: "gpu" in the compose deployment, so that only GPU
# workers (celery worker --queues gpu) take them; read when the DAG file is parsed.
EXTRACT_QUEUE = os.environ.get("TLFS_EXTRACT_QUEUE", "default")
# Shard tasks on the GPU queue run on GPU workers: their device is cuda unless a run says otherwise.
DEFAULT_DEVICE = "cuda" if EXTRACT_QUEUE == "gpu" else "cpu"
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


@contextlib.contextmanager
def _no_retry_when_final():
    """A failure that a retry cannot cure (another run's commit replaced this run's plan; a
    set that cannot fit a head) fails the task at once, with its one-line reason, instead of
    retrying into it."""
    from airflow.sdk.exceptions import AirflowFailException

    from tlfs.pipeline import tasks

    try:
        yield
    except tasks.FINAL_ERRORS as exc:
        raise AirflowFailException(str(exc)) from exc


def tlfs_dag(dag_id: str, description: str, schedule, params: dict, tag: str, **extra):
    """The settings every tlfs DAG shares: no catch-up, one run at a time, retries."""
    return dag(dag_id=dag_id, description=description, schedule=schedule, start_date=datetime(2026, 1, 1), catchup=False,
               max_active_runs=1, params=params, default_args=DEFAULT_ARGS, tags=["tlfs", tag], **extra)


def _nullable(kind: str, **schema):
    return {"type": [kind, "null"], **schema}


def extract_params(spec: DatasetSpec) -> dict:
    return {
        "backbone": Param(spec.backbone, type="string", pattern=BACKBONE_NAME, description=BACKBONE_HELP),
        "layers": Param(spec.layers, **_nullable("array", items={"type": "string"}), description="tap layers (null: all)"),
        "splits": Param(spec.splits, **_nullable("array", items={"type": "string"}), description="splits (null: all)"),
        "sources": Param(spec.sources, type="array", items={"type": "string"},
                         description="dataset source URIs ([]: the dataset's default source, else those its newest set was "
                                     "extracted from)"),
        "store": setting_param("store"),
        "models": setting_param("model_store"),
        "device": setting_param("device", DEFAULT_DEVICE, "extraction device (cuda on the gpu queue); cuda never falls back to cpu"),
        "precision": setting_param("precision"),
        "batch_size": setting_param("batch_size"),
        "shard_size": setting_param("shard_size", Settings.shard_size),
        "codec": setting_param("codec"),
        "decode_workers": setting_param("decode_workers"),
        "limit": Param(spec.limit, **_nullable("integer", minimum=1), description="class-balanced sample per split"),
        "views": Param(spec.views, type="array", items={"type": "string", "enum": list(EXTRA_VIEWS)},
                       description="views stored beside the original ([\"flip\"]: the flipped image too, extra rows for heads)"),
        "bit_depth": bit_depth_param(spec.bit_depth),
        "incremental": Param(True, type="boolean", description="reuse the features of images unchanged since the set's "
                             "newest version; extract only new and changed images (false: extract every image again)"),
        "finetune": Param("auto", type="string", enum=["auto", "never", "always"],
                          description="after extraction: auto = fine-tune when `tlfs advise` finds the dataset large"),
        "finetune_device": Param("cuda", type="string", enum=["cpu", "cuda"], description="device of the triggered fine-tuning"),
        "large_per_class": Param(LARGE_IMAGES_PER_CLASS, type="integer", minimum=1,
                                 description="training images per class from which the advisor calls the dataset large"),
        "similar_score": Param(SIMILAR_SCORE, type="number", exclusiveMinimum=0, maximum=1,
                               description="similarity to ImageNet from which the advisor calls the dataset similar"),
    }


def finetune_params(spec: DatasetSpec) -> dict:
    return {
        "backbone": Param(spec.backbone, type="string", pattern=BACKBONE_NAME, description=f"backbone to fine-tune: {BACKBONE_HELP}"),
        "sources": Param(spec.sources, type="array", items={"type": "string"}, description="[]: the default source, else those the newest set was extracted from"),
        "limit": Param(spec.limit, **_nullable("integer", minimum=1)),
        "layers": Param(spec.layers, **_nullable("array", items={"type": "string"}), description="layers to extract after"),
        "store": setting_param("store"),
        "models": setting_param("model_store"),
        "device": Param("cuda", type="string", enum=["cpu", "cuda"], description="cuda never falls back to cpu"),
        **finetune_config_params(),
        "batch_size": setting_param("batch_size", description=f"extraction: {setting_help('batch_size')}"),
        "shard_size": setting_param("shard_size", Settings.shard_size),
        "codec": setting_param("codec", description=f"extraction: {setting_help('codec')}"),
        "bit_depth": bit_depth_param(spec.bit_depth),
    }


def bit_depth_param(default: int | None) -> Param:
    return Param(default, **_nullable("integer", minimum=BIT_DEPTHS.start, maximum=BIT_DEPTHS.stop - 1),
                 description="the bits greyscale 16-bit images hold (12: a microscope's or an X-ray's 0-4095, scaled by "
                             "4095 instead of 65535); null: as the set's newest version, else 16; the spec's bit_depth is the default")


def extraction(spec: DatasetSpec, asset: Asset, backbone_version):
    """plan_shards -> extract_shard (mapped) -> commit, in the DAG being defined, for the
    backbone version that ``backbone_version`` (an XCom dict) names."""

    @task
    def plan_shards(exported: dict) -> list[dict]:
        """One job per shard: what each mapped extract_shard task receives."""
        from tlfs.pipeline import tasks

        p = get_current_context()["params"]
        params = tasks.ExtractionParams.from_params({"device": DEFAULT_DEVICE, **p})
        with _no_retry_when_final():
            planned = tasks.plan_extraction(spec.name, exported["backbone_version"], params, log=_log)
        _log(f"{planned['summary']}; {len(planned['shard_groups'])} shard tasks")
        return [{"set_uri": planned["set_uri"], "plan_id": planned["plan_id"], "shards": g} for g in planned["shard_groups"]]

    @task(pool=EXTRACT_POOL, queue=EXTRACT_QUEUE, retries=3)
    def extract_shard(job: dict) -> list[dict]:
        """One group of consecutive shards (one shard unless the dataset has more shards
        than TLFS_MAX_SHARD_TASKS); a retry skips the shards already written."""
        from tlfs.pipeline import tasks

        decode_workers = get_current_context()["params"].get("decode_workers")
        with _no_retry_when_final():
            results = tasks.extract_shards(job["set_uri"], job["plan_id"], job["shards"],  # on their plan's device
                                           decode_workers=decode_workers)
        for result in results:  # seconds: the shard's wall time; infer and write: its batches' and its files' work
            _log(f"shard {result['shard']}: " + ", ".join(f"{k} {result.get(k)}" for k in (
                "split", "read", "written", "rejected", "seconds", "infer_seconds", "write_seconds", "skipped")))
        return results  # handed to the commit

    @task(outlets=[asset])
    def commit(jobs: list[dict], shard_results: list[list[dict]]) -> dict:
        from tlfs.pipeline import tasks

        set_uri, plan_id = jobs[0]["set_uri"], jobs[0]["plan_id"]
        with _no_retry_when_final():
            summary = tasks.commit_extraction(set_uri, plan_id, [r for group in shard_results for r in group], log=_log)
        _log(summary["summary"])
        context = get_current_context()
        context["outlet_events"][asset].extra = tasks.asset_extra(summary, context["params"]["store"])
        return summary

    jobs = plan_shards(backbone_version)
    return commit(jobs, extract_shard.expand(job=jobs))


def build_extract_dag(spec: DatasetSpec):
    asset = features_asset(spec.name)

    @tlfs_dag(f"extract_{spec.name}", spec.description or f"extract features of {spec.name}", spec.schedule,
              extract_params(spec), "extract", doc_md=__doc__)
    def extract_dag():
        @task
        def export_backbone() -> dict:
            from tlfs.pipeline import tasks

            p = get_current_context()["params"]
            return tasks.export_backbone(p["backbone"], p["models"], log=_log)

        @task
        def advise(committed: dict) -> dict:
            from tlfs.pipeline import tasks
            from tlfs.pipeline.advise import Thresholds

            # the set this run just committed: its stored features, nothing extracted again
            p = get_current_context()["params"]
            target = tasks.SetTarget(spec.name, committed["backbone_version"], p["store"])
            return tasks.advise_dataset(target, Thresholds.given(p["large_per_class"], p["similar_score"]), log=_log)

        @task.branch
        def choose(advice: dict) -> str:
            from tlfs.pipeline import tasks

            mode = get_current_context()["params"]["finetune"]
            _log(f"advice: {advice['case']} -> {advice['action']} (finetune={mode})")
            return "trigger_finetune" if tasks.fine_tune_next(advice, mode) else "heads_only"

        @task
        def finetune_conf() -> dict:
            p = get_current_context()["params"]
            keys = ("backbone", "sources", "limit", "layers", "store", "models", "batch_size", "shard_size", "codec",
                    "bit_depth")
            return {**{k: p[k] for k in keys}, "device": p["finetune_device"]}

        committed = extraction(spec, asset, export_backbone())
        decision = choose(advise(committed))
        trigger = TriggerDagRunOperator(task_id="trigger_finetune", trigger_dag_id=f"finetune_{spec.name}",
                                        conf=finetune_conf(), wait_for_completion=False)
        decision >> [trigger, EmptyOperator(task_id="heads_only")]

    return extract_dag()


def build_finetune_dag(spec: DatasetSpec):
    asset = features_asset(spec.name)

    @tlfs_dag(f"finetune_{spec.name}", f"fine-tune a backbone on {spec.name}, export it, extract features with it", None,
              finetune_params(spec), "finetune")
    def finetune_dag():
        @task(pool=EXTRACT_POOL, queue=EXTRACT_QUEUE, execution_timeout=timedelta(hours=24))
        def finetune() -> dict:
            from tlfs.pipeline import tasks

            p = get_current_context()["params"]
            params = tasks.FinetuneParams(p["backbone"], p["sources"], p["limit"], p["models"], p["device"],
                                          finetune_config_of(p), bit_depth=p["bit_depth"])
            with _no_retry_when_final():
                return tasks.finetune_backbone(spec.name, params, log=_log)

        extraction(spec, asset, finetune())

    return finetune_dag()


def fit_target(dataset: str, params: dict, events: dict) -> dict:
    """What a fit_heads run fits (tasks.fit_target), from the newest triggering Asset
    event; skipped where that version changed nothing."""
    from airflow.sdk.exceptions import AirflowSkipException

    from tlfs.pipeline import tasks

    newest = next((event_list[-1].extra or {} for event_list in events.values() if event_list), None)
    try:
        return tasks.fit_target(dataset, params, newest).to_json()
    except tasks.HeadsStand as exc:
        raise AirflowSkipException(str(exc)) from None


def _skip_unless_checking() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    if not get_current_context()["params"]["checks"]:
        raise AirflowSkipException("checks are off (the checks param, or the spec's key)")


def _kept_or_skipped(checked: dict | str) -> dict:
    """A check's task result: what it kept, or the task skipped with the reason it could not run."""
    from airflow.sdk.exceptions import AirflowSkipException

    if isinstance(checked, str):
        raise AirflowSkipException(checked)
    return checked


def build_fit_dag(spec: DatasetSpec):
    asset = features_asset(spec.name)

    @tlfs_dag(f"fit_heads_{spec.name}", f"layer sweep, heads, a learning curve, near-copies between splits, labels that "
              f"look wrong, the images to label next and a report page on the features of {spec.name}", [asset], {
        "backbone": Param(spec.backbone, type="string", pattern=BACKBONE_OR_VERSION,
                          description="backbone name or version (when run by hand)"),
        "store": setting_param("store"),
        "heads": Param(list(HEADS), type="array", items={"type": "string", "enum": list(HEADS)}),
        "balanced": Param(spec.balanced, type="boolean", description="heads that predict as if every class were equally common "
                          "(tlfs fit --balanced): for imbalanced classes; the best layer and head then chosen by "
                          "validation balanced accuracy"),
        "unlabelled": Param(spec.unlabelled, type="array", items={"type": "string"},
                            description="images waiting for labels (files, folders or globs): label_next chooses the "
                            "ones the shipped head is least sure of ([]: none, the task is skipped)"),
        "label_next": Param(spec.label_next, type="integer", minimum=1, description="how many images label_next chooses"),
        "checks": Param(spec.checks, type="boolean", description="after the fit, look for test images with a near-copy "
                        "in train and for training labels that look wrong (tlfs duplicates, tlfs label-issues): 40 s for "
                        "CIFAR-10 on 2 cores, the near-copy search growing with the product of the two splits' sizes"),
    }, "heads")
    def fit_dag():
        @task
        def feature_set() -> dict:
            context = get_current_context()
            return fit_target(spec.name, context["params"], context.get("triggering_asset_events") or {})

        @task
        def sweep(target: dict) -> dict:
            from tlfs.pipeline import tasks

            with _no_retry_when_final():  # a set that cannot fit a head (one class, an empty split) stays so
                return tasks.sweep_layers(tasks.SetTarget.from_json(target), log=_log,
                                          balanced=get_current_context()["params"]["balanced"])

        @task
        def fit_heads(target: dict, swept: dict) -> list[dict]:
            from tlfs.pipeline import tasks

            heads = get_current_context()["params"]["heads"]
            return tasks.heads_on_best_layer(tasks.SetTarget.from_json(target), swept, heads, log=_log)

        @task
        def ship_classifier(target: dict, fitted: list[dict]) -> dict:
            from tlfs.pipeline import tasks

            return tasks.ship_best_head(tasks.SetTarget.from_json(target), fitted, log=_log)

        @task
        def learning_curve(target: dict, swept: dict) -> dict:
            from tlfs.pipeline import tasks

            return tasks.curve_on_best_layer(tasks.SetTarget.from_json(target), swept, log=_log)

        @task
        def label_next(target: dict, shipped: dict) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from tlfs.pipeline import tasks

            params = get_current_context()["params"]
            if not params["unlabelled"]:
                raise AirflowSkipException("no unlabelled images named (the unlabelled param, or the spec's key)")
            return tasks.choose_next_to_label(tasks.SetTarget.from_json(target), shipped["head"], params["unlabelled"],
                                              params["label_next"], log=_log)

        @task
        def near_copies(target: dict, shipped: dict) -> dict:
            from tlfs.pipeline import tasks

            _skip_unless_checking()
            return _kept_or_skipped(tasks.check_near_copies(tasks.SetTarget.from_json(target), shipped["head"], log=_log))

        @task
        def label_issues(target: dict, swept: dict) -> dict:  # on the layer the sweep chose, stored for this version
            from tlfs.pipeline import tasks

            _skip_unless_checking()
            return _kept_or_skipped(tasks.check_labels(tasks.SetTarget.from_json(target), log=_log))

        @task(trigger_rule="none_failed_min_one_success")  # after the checks and the queue, run or skipped
        def report(target: dict) -> dict:
            from tlfs.pipeline import tasks

            return tasks.write_report(tasks.SetTarget.from_json(target), log=_log)

        target = feature_set()
        swept = sweep(target)
        shipped = ship_classifier(target, fit_heads(target, swept))
        checks = [label_next(target, shipped), near_copies(target, shipped), label_issues(target, swept)]
        [*checks, learning_curve(target, swept)] >> report(target)

    return fit_dag()
