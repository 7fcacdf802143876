"""The pipeline's steps as plain functions of JSON-friendly values: what an Airflow
task (or any other scheduler) calls. Each returns a small dict suitable for XCom; the
heavy data stays in the store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from tlfs.features.errors import PlanReplaced
from tlfs.pipeline.errors import CannotFit, NothingReadable, SampleShrinksSet
from tlfs.pipeline.config import load_settings
from tlfs.pipeline.dataset_sources import sources_for
from tlfs.pipeline.image_decode import FULL_DEPTH

# Errors that a retry of the same task cannot cure: the scheduler should fail the task
# at once (the message says what to do) rather than retry it.
FINAL_ERRORS = (PlanReplaced, SampleShrinksSet, NothingReadable, CannotFit)


def _settings(store: str | None = None, model_store: str | None = None):
    return load_settings(store=store or None, model_store=model_store or None)


def export_backbone(backbone: str, model_store: str | None = None, weights: str | None = None, log: Callable = print) -> dict:
    from tlfs.models.export import export

    artifact = export(backbone, _settings(model_store=model_store).model_store, weights=weights, log=log)
    return {"backbone_version": artifact.version, "uri": artifact.uri, "onnx_sha256": artifact.card["onnx_sha256"]}


@dataclass(frozen=True)
class ExtractionParams:
    """What a run asks of an extraction (a DAG run's Params); None: the setting's default
    (pipeline/config.py), the device's for ``batch_size`` and ``precision``."""

    sources: tuple[str, ...] = ()  # empty: the dataset's default source
    layers: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    limit: int | None = None
    store: str | None = None
    model_store: str | None = None
    batch_size: int | None = None
    shard_size: int | None = None
    codec: str | None = None
    weights: str | None = None
    device: str | None = None
    precision: str | None = None
    views: tuple[str, ...] | None = None
    incremental: bool = True  # reuse the newest version's unchanged images (pipeline/incremental.py)
    bit_depth: int | None = None  # greyscale 16-bit samples' bits (pipeline/image_decode.py); None: the set's, else 16

    @classmethod
    def from_params(cls, params) -> "ExtractionParams":
        """From a DAG run's Params (``models`` is the model store there); keys it lacks keep their defaults."""
        given = {("model_store" if key == "models" else key): value for key, value in dict(params).items()}
        values = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        for name in ("sources", "layers", "splits", "views"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def plan_extraction(dataset: str, backbone: str, params: ExtractionParams = ExtractionParams(),
                    log: Callable = print) -> dict:
    """Plan an extraction on the device ``params`` name; the plan's shards then run on that device."""
    from tlfs.pipeline import extract
    from tlfs.pipeline.plan import ExtractionRequest

    p = params
    s = load_settings(store=p.store or None, model_store=p.model_store or None, batch_size=p.batch_size,
                      shard_size=p.shard_size, codec=p.codec, device=p.device, precision=p.precision)
    request = ExtractionRequest(dataset, sources_for(s, dataset, list(p.sources), log), backbone, s.store, s.model_store,
                                layers=p.layers or None, splits=p.splits or None, limit=p.limit or None,
                                shard_size=s.shard_size, codec=s.codec, runtime=s.runtime(), weights=p.weights,
                                cache_dir=s.cache_dir, views=p.views or None, incremental=p.incremental,
                                bit_depth=p.bit_depth)
    plan = extract.plan_task(request, lease=s.lease_terms(task=True), log=log)
    return {
        "set_uri": plan.set_uri,
        "plan_id": plan.plan_id,
        "backbone_version": plan.backbone_version,
        "runtime": plan.runtime.to_json(),
        "shards": [shard.number for shard in plan.shards],
        "shard_groups": shard_groups([shard.number for shard in plan.shards], s.max_shard_tasks),
        "images": plan.images,
        "changes": plan.changes.to_json() if plan.changes else {},  # against the version it builds on
        "summary": f"{plan.images} images in {len(plan.shards)} shards -> {plan.set_uri}; "
                   + (plan.changes.describe() if plan.changes else "every image extracted"),
    }


def shard_groups(numbers: list[int], most: int) -> list[list[int]]:
    """``numbers`` in at most ``most`` runs of consecutive shards, as even as can be: one
    mapped task each, so that a mapping never outgrows Airflow's limit, and a task's
    shards read their archive once (a run keeps it open from shard to shard)."""
    groups = min(len(numbers), most)
    size, extra = divmod(len(numbers), groups) if groups else (0, 0)
    out, start = [], 0
    for g in range(groups):
        stop = start + size + (g < extra)
        out.append(numbers[start:stop])
        start = stop
    return out


def extract_shards(set_uri: str, plan_id: str, shards: list[int], threads: int | None = None,
                   decode_workers: int | None = None) -> list[dict]:
    """A group of shards, on the device and precision their plan fixed."""
    from tlfs.pipeline import extract

    s = load_settings(decode_workers=decode_workers)
    workers = extract.Workers(threads=threads, decode_workers=s.decode_workers, writers=s.writers or None,
                              sessions=s.sessions or None)
    # the whole records (files with sizes and digests, rejects): the commit is handed them
    return extract.extract_shards_task(set_uri, plan_id, shards, workers, lease=s.lease_terms(task=True))


def _changes_line(changes: dict) -> str:
    from tlfs.pipeline.commit import describe_changes

    return describe_changes(changes) if changes else "every image extracted"


def commit_extraction(set_uri: str, plan_id: str, results: list[dict] | None = None, log: Callable = print) -> dict:
    """Commit a plan from the shard records its tasks handed on (``results``; read back
    from staging where not given), after checking that every file they name is there."""
    from tlfs.pipeline import extract

    s = _settings()
    committed = extract.commit_task(set_uri, plan_id, results, lease=s.lease_terms(), log=log, retention=s.retention())
    return {
        "set_uri": set_uri,
        "dataset": committed.dataset,
        "backbone_version": committed.backbone_version,
        "version": committed.version,
        "unchanged": committed.unchanged,
        "changes": committed.changes,
        "rows": committed.rows,
        "counts": committed.counts,
        "rejected": committed.rejected,
        "summary": f"version {committed.version}" + (" (unchanged: no new version)" if committed.unchanged else "")
                   + f": {_changes_line(committed.changes)}",
    }


def asset_extra(committed: dict, store: str | None) -> dict:
    """What a commit's Asset event carries for the runs it triggers: which set, which
    version, and what changed."""
    changes = committed["changes"]
    return {"set_uri": committed["set_uri"], "backbone_version": committed["backbone_version"], "store": store,
            "rows": committed["rows"], "version": committed["version"], "unchanged": committed["unchanged"],
            **{k: changes.get(k) for k in ("added", "changed", "removed", "reused")}}


class HeadsStand(Exception):
    """A fit run triggered by a version that changed nothing: that version's heads stand."""


@dataclass(frozen=True)
class SetTarget:
    """One version of a dataset's feature set, as a task names it: ``backbone`` (a name or
    an exact version) in ``store`` (None: the settings'), at ``version`` (None: the
    newest). It passes from task to task as JSON."""

    dataset: str
    backbone: str
    store: str | None = None
    version: int | None = None

    def open(self):
        """The :class:`~tlfs.features.feature_set.FeatureSet` it names."""
        from tlfs import features

        return features.open_set(self.dataset, self.backbone, store=_settings(self.store).store, version=self.version)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SetTarget":
        return cls(data["dataset"], data["backbone"], data.get("store"), data.get("version"))


def fit_target(dataset: str, params: dict, extra: dict | None) -> SetTarget:
    """What a fit run fits: the set version whose Asset event triggered it (``extra``, even
    if a newer version came since), else its params' set at its newest version. Raises
    :class:`HeadsStand` for a version that changed nothing."""
    if extra is None:
        return SetTarget(dataset, params["backbone"], params["store"])
    if extra.get("unchanged"):
        raise HeadsStand(f"version {extra.get('version')} is unchanged: its heads stand")
    return SetTarget(dataset, extra.get("backbone_version", params["backbone"]), extra.get("store", params["store"]),
                     extra.get("version"))


def fine_tune_next(advice: dict, mode: str) -> bool:
    """Whether an extraction goes on to fine-tuning: under ``auto`` when the advisor found
    the dataset large; ``always`` and ``never`` as they say."""
    return mode == "always" or (mode == "auto" and bool(advice["size"]["large"]))


def sweep_layers(target: SetTarget, log: Callable = print, balanced: bool = False) -> dict:
    """The layer sweep on the ``target`` set version (``balanced``: of balanced heads)."""
    from tlfs.pipeline.fit import sweep

    summary = sweep(target.open(), log=log, balanced=balanced)
    return {k: summary[k] for k in ("layers", "validation", "balanced_accuracy", "balanced", "best_layer", "chosen_by",
                                    "test_accuracy", "saved_to", "best_head")}


def fit_head(target: SetTarget, layers: list[str], head: str, log: Callable = print, balanced: bool = False) -> dict:
    from tlfs.pipeline.fit import HEAD_SUMMARY, fit

    result = fit(target.open(), layers, head, log=log, balanced=balanced)
    return {k: result[k] for k in HEAD_SUMMARY}


def heads_on_best_layer(target: SetTarget, swept: dict, heads: list[str], log: Callable = print) -> list[dict]:
    """``heads`` on the layer the sweep found best, balanced where its heads were; the
    softmax head there is the sweep's own (it is saved as ``softmax-<layer>``), not fitted twice."""
    results = []
    for head in heads:
        if head == "softmax" and swept.get("best_head"):
            log(f"softmax on {swept['best_layer']}: the sweep's head (test accuracy {swept['best_head']['test_accuracy']:.4f})")
            results.append(swept["best_head"])
        else:
            results.append(fit_head(target, [swept["best_layer"]], head, log=log, balanced=swept.get("balanced", False)))
    return results


def curve_on_best_layer(target: SetTarget, swept: dict, log: Callable = print) -> dict:
    """The softmax head's learning curve on the layer the sweep found best (balanced where the
    sweep's heads were): what more labels would add, which ``tlfs advise`` then shows beside
    the dataset's size."""
    from tlfs.pipeline.learning_curve import LearningCurveRequest, learning_curve

    result = learning_curve(LearningCurveRequest(target.dataset, target.backbone, (swept["best_layer"],), store=_settings(
        target.store).store, version=target.version, balanced=swept.get("balanced", False)), log=log)
    return {k: result[k] for k in ("layers", "points", "last_doubling_gain", "saved_to")}


def ship_best_head(target: SetTarget, fitted: list[dict], log: Callable = print) -> dict:
    """The fitted head preferred (:func:`~tlfs.pipeline.saved_heads.preference`: the best
    validation accuracy, or balanced accuracy where the heads are balanced; of equals the
    simpler head, then the surer), written as one ONNX classifier beside it (``tlfs export-classifier``)."""
    from tlfs.pipeline.errors import PipelineError
    from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier
    from tlfs.pipeline.saved_heads import preference

    if not fitted:
        raise PipelineError("no head was fitted: nothing to ship")
    measure = "validation_balanced_accuracy" if all(head.get("balanced") for head in fitted) else "validation_accuracy"
    best = min(fitted, key=lambda head: preference(head["head"], head[measure], head.get("validation_log_loss")))
    name = best["saved_to"].rstrip("/").rsplit("/", 1)[-1]
    log(f"shipping {name} ({measure.replace('_', ' ')} {best[measure]:.4f}, the best of "
        f"{', '.join(head['head'] for head in fitted)})")
    shipped = export_classifier(ClassifierRequest(target.dataset, target.backbone, name, store=_settings(target.store).store,
                                                  version=target.version), log=log)
    return {k: shipped[k] for k in ("output", "bytes", "sha256", "head", "layers", "views", "classes", "test_accuracy",
                                    "backbone_version", "parity")}


def choose_next_to_label(target: SetTarget, head: str, images: list[str], count: int, log: Callable = print) -> dict:
    """Of ``images`` (unlabelled: files, folders, globs), the ``count`` the ``head`` is least sure
    of (``tlfs label-next``), saved beside the set's heads as ``label_next.csv`` (least sure
    first) and ``label_next.png`` (a sheet of the first)."""
    import tempfile
    from pathlib import Path

    from tlfs.features import layout
    from tlfs.pipeline.fit import publish_files
    from tlfs.pipeline.label_next import LabelNextRequest, chosen_sheet, label_next
    from tlfs.pipeline.tables import write_table

    settings = _settings(target.store)
    chosen, summary = label_next(LabelNextRequest(target.dataset, target.backbone, tuple(images), count, head,
                                                  settings.store, settings.device, settings.batch_size,
                                                  version=target.version, decode_workers=settings.decode_workers), log=log)
    heads = layout.heads_uri(summary["set_uri"])
    with tempfile.TemporaryDirectory(prefix="tlfs-label-next-") as tmp:
        table, sheet = Path(tmp) / "label_next.csv", Path(tmp) / "label_next.png"
        write_table(chosen, str(table))
        sheet.write_bytes(chosen_sheet(chosen, summary))
        publish_files([table, sheet], heads)
    return {**summary, "saved_to": f"{heads}/label_next.csv"}


SHEET_PAIRS = 8  # the near-copy check's sheet: this many pairs on each side of the threshold


def check_near_copies(target: SetTarget, head: str, log: Callable = print) -> dict | str:
    """The ``target`` set's test images with a near-copy among its training images, and the
    ``head``'s accuracy with and without them (``tlfs duplicates --head HEAD --save``, with a
    sheet of the pairs where the threshold cuts), kept beside its heads for the report; where
    the set lacks a train or a test split, why not (a str)."""
    from tlfs.pipeline.duplicates import KEPT_AS, DuplicatesRequest, find_duplicates, threshold_sheet
    from tlfs.pipeline.errors import CannotCheck

    request = DuplicatesRequest(target.dataset, target.backbone, head=head, store=_settings(target.store).store,
                                version=target.version)
    try:
        pairs, summary = find_duplicates(request, log=log)
    except CannotCheck as exc:
        return str(exc)
    log(f"{summary['near_copies']} of {summary['images']} {summary['counted']} at {summary['threshold']} on "
        f"{summary['layer']}")
    return _kept(KEPT_AS, pairs, summary, _drawn(lambda: threshold_sheet(request, pairs, SHEET_PAIRS, log=log), log))


def check_labels(target: SetTarget, log: Callable = print) -> dict | str:
    """The ``target`` set's training labels that look wrong to a softmax head on the sweep's
    layer that never saw their images (``tlfs label-issues --save``, with its sheet), kept
    beside its heads for the report; where its training split cannot check them, why (a str)."""
    from tlfs.pipeline.errors import CannotCheck
    from tlfs.pipeline.label_issues import KEPT_AS, LabelIssuesRequest, find_label_issues, issues_sheet

    request = LabelIssuesRequest(target.dataset, target.backbone, store=_settings(target.store).store,
                                 version=target.version)
    try:
        issues, summary = find_label_issues(request, log=log)
    except CannotCheck as exc:
        return str(exc)
    log(f"{summary['issues']} of {summary['images']} {summary['split']} labels look wrong")
    sheet = _drawn(lambda: issues_sheet(request, issues, summary["layers"], log=log), log) if len(issues) else None
    return _kept(KEPT_AS, issues, summary, sheet)


def _drawn(draw: Callable[[], bytes], log: Callable) -> bytes | None:
    """A check's sheet of images, or None where they cannot be read again from the set's
    sources (moved or gone), said in the log: the check stands without its pictures."""
    from tlfs.pipeline.errors import PipelineError

    try:
        return draw()
    except PipelineError as exc:
        log(f"note: no sheet of images: {exc}")
        return None


def _kept(name: str, table, summary: dict, sheet: bytes | None) -> dict:
    """A check kept beside its set's heads (pipeline/kept_checks.py), as its task returns it."""
    from tlfs.pipeline.kept_checks import keep_check

    return {**summary, "sheet": sheet is not None, "saved_to": keep_check(summary["feature_set"], name, table, summary, sheet)}


def write_report(target: SetTarget, log: Callable = print) -> dict:
    """One HTML page about the ``target`` set version (``tlfs report``), saved beside its heads
    as ``report.html``: what the fit_heads DAG leaves after each fit."""
    from tlfs.pipeline.report import ReportRequest, write_report as write_page

    summary = write_page(ReportRequest(target.dataset, target.backbone, _settings(target.store).store, target.version),
                         log=log)
    return {**summary, "saved_to": summary["output"]}


def advise_dataset(target: SetTarget, thresholds=None, log: Callable = print) -> dict:
    """The transfer case of the ``target`` set version, from its stored features
    (``thresholds``: pipeline/advise.Thresholds, by default the advisor's)."""
    from tlfs.pipeline import advise

    return advise.advise(target.open(), thresholds or advise.Thresholds(), log=log)


@dataclass(frozen=True)
class FinetuneParams:
    """What a run asks of fine-tuning (a finetune DAG run's Params); None: the setting's default."""

    backbone: str
    sources: tuple[str, ...] | None = None  # None or empty: the dataset's default source
    limit: int | None = None
    model_store: str | None = None
    device: str = "cpu"
    config: dict = field(default_factory=dict)  # FinetuneConfig's settings (pipeline/config.py)
    bit_depth: int | None = None  # greyscale 16-bit samples' bits (pipeline/image_decode.py); None: 16


def finetune_backbone(dataset: str, params: FinetuneParams, log: Callable = print) -> dict:
    from tlfs.pipeline.finetune import FinetuneConfig, FinetuneRequest, finetune

    s = _settings(model_store=params.model_store)
    request = FinetuneRequest(dataset, sources_for(s, dataset, list(params.sources or ()), log), params.backbone, s.model_store,
                              FinetuneConfig(**params.config), limit=params.limit or None, device=params.device,
                              cache_dir=s.cache_dir, bit_depth=params.bit_depth or FULL_DEPTH)
    result = finetune(request, show_progress=False, log=log)
    return {k: v for k, v in result.items() if k != "history"}
