"""The heads a feature set has saved (``tlfs fit`` and ``tlfs sweep`` write them under the
set's ``_heads/``): which there are, the default one, and one read back with its files and
probabilities, for ``tlfs predict`` and ``tlfs export-classifier``; and every saved head of a
store side by side (``tlfs heads``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tlfs.features import layout
from tlfs.features.feature_set import FeatureSet
from tlfs.features.storage import fs_path, read_json_if_exists
from tlfs.models import heads
from tlfs.models.names import HEADS
from tlfs.pipeline.errors import PipelineError

CLASSIFIER_FILE = "classifier.onnx"  # a head shipped as one ONNX file, beside it (tlfs export-classifier)
SIMPLEST_FIRST = {kind: n for n, kind in enumerate(HEADS)}  # softmax, LightGBM, MLP


def preference(kind: str, validation_accuracy: float | None, validation_log_loss: float | None = None) -> tuple:
    """The order in which heads are preferred (the least first): the higher validation
    accuracy (a head without one last), of equals the simpler head, then the surer one on the
    validation images (the lower log-loss; a head fitted before it was recorded after), as the
    sweep breaks its ties (:func:`tlfs.pipeline.fit.best_layer`). Never the test accuracy, which
    stays an honest estimate. The ``fit_heads`` DAG ships by it and ``tlfs heads`` marks by it."""
    return (-validation_accuracy if _known(validation_accuracy) else float("inf"), SIMPLEST_FIRST.get(kind, len(HEADS)),
            validation_log_loss if _known(validation_log_loss) else float("inf"))


def _known(value: float | None) -> bool:
    return value is not None and value == value  # not None, not NaN


@dataclass(frozen=True)
class SavedHead:
    """A head as ``tlfs fit`` saved it: its metrics (layers, views, classes, the features it
    was fitted on), its files (name -> bytes, as :data:`~tlfs.models.heads.SAVED` lists
    them) and its probabilities."""

    name: str
    metrics: dict
    files: dict[str, bytes]
    predict_proba: Callable[[np.ndarray], np.ndarray]

    @property
    def classes(self) -> list[str]:
        return self.metrics["classes"]

    @property
    def kind(self) -> str:
        return self.metrics["head"]


BALANCED_SUFFIX = "-balanced"


def head_name(head: str, layers: list[str], balanced: bool = False) -> str:
    """The name a head is saved under in the set's ``_heads/``: ``mlp-block15``,
    ``softmax-block14+head``; ``mlp-block15-balanced`` for a balanced head (``tlfs fit --balanced``)."""
    return f"{head}-{'+'.join(layers)}{BALANCED_SUFFIX if balanced else ''}"


def default_head(feature_set: FeatureSet) -> str:
    """The head a command uses where none is named (``predict``, ``export-classifier``,
    ``label-next``): the first of :func:`ranked_heads`, the one the ``fit_heads`` DAG ships and
    ``tlfs heads`` marks best. An error saying how to fit one where none is saved."""
    ranked = ranked_heads(feature_set)
    if not ranked:
        raise PipelineError(f"{feature_set.uri} has no saved head: `tlfs sweep --dataset {feature_set.dataset}` fits a "
                            f"softmax head on every layer, `tlfs fit --dataset {feature_set.dataset} --layer LAYER --head "
                            "softmax|lightgbm|mlp` one head; or name a head with --head")
    return ranked[0]["name"]


def ranked_heads(feature_set: FeatureSet) -> list[dict]:
    """The set's saved heads (:func:`head_summaries`) in the order of :func:`preferred_order`;
    balanced heads first where the set's sweep was balanced."""
    sweep = read_json_if_exists(f"{layout.heads_uri(feature_set.uri)}/sweep.json") or {}
    return preferred_order(head_summaries(feature_set.uri), feature_set.plan_id, list(feature_set.layers),
                           balanced=bool(sweep.get("balanced")))


def preferred_order(summaries: list[dict], plan_id: str | None, layers: list[str], balanced: bool = False) -> list[dict]:
    """``summaries`` (:func:`head_summaries`), the head to use by default first: those fitted
    on the set's newest version (``plan_id``) before the others, the plain ones (or the balanced
    ones, ``balanced``) before the others, then by :func:`preference`: the best validation
    accuracy (balanced accuracy for balanced heads), of equals the simpler head, then the
    earlier of the set's ``layers``, as the sweep chooses."""
    order = {layer: n for n, layer in enumerate(layers)}

    def rank(head: dict) -> tuple:
        measure = head["validation_balanced_accuracy"] if head["balanced"] else head["validation_accuracy"]
        return (head["plan_id"] != plan_id, bool(head["balanced"]) != balanced,
                *preference(head["head"], measure, head.get("validation_log_loss")),
                tuple(order.get(layer, len(order)) for layer in head["layers"]))

    return sorted(summaries, key=rank)


def preferred_head(summaries: list[dict], plan_id: str | None, layers: list[str], balanced: bool = False) -> str | None:
    """The name of the first head of :func:`preferred_order`; None where there is none."""
    ranked = preferred_order(summaries, plan_id, layers, balanced)
    return ranked[0]["name"] if ranked else None


def layers_to_use(feature_set: FeatureSet, asked: list[str] | tuple[str, ...]) -> list[str]:
    """The layers a command works on: those ``asked`` for (each one the set must hold), every
    layer for ``["all"]``, or where none is asked, the best layer of the sweep stored for this
    version of the set, else its deepest layer."""
    if list(asked) == ["all"]:
        return list(feature_set.layers)
    unknown = [layer for layer in asked if layer not in feature_set.layers]
    if unknown:
        raise PipelineError(f"{feature_set.uri} has no layer {unknown[0]!r}; it has {', '.join(feature_set.layers)}")
    if asked:
        return list(asked)
    sweep = read_json_if_exists(f"{layout.heads_uri(feature_set.uri)}/sweep.json")
    if sweep and sweep.get("plan_id") == feature_set.plan_id and sweep.get("best_layer") in feature_set.layers:
        return [sweep["best_layer"]]
    return [list(feature_set.layers)[-1]]


def split_to_use(feature_set: FeatureSet, split: str) -> str:
    """``split``, which the set must hold."""
    if split not in feature_set.splits:
        raise PipelineError(f"{feature_set.uri} has no split {split!r}; it has {', '.join(feature_set.splits)}")
    return split


def load_head(feature_set: FeatureSet, name: str) -> SavedHead:
    """The head saved as ``name`` (``softmax-block15``, ``mlp-block14+head``) under the set's
    ``_heads/``: an error naming the saved ones where there is none of that name."""
    folder = f"{layout.heads_uri(feature_set.uri)}/{name}"
    metrics = read_json_if_exists(f"{folder}/metrics.json")
    if metrics is None:
        raise PipelineError(f"no head {name!r} in {feature_set.uri}; saved: {', '.join(saved_heads(feature_set.uri)) or 'none'} "
                            f"(tlfs fit --dataset {feature_set.dataset} --layer LAYER --head softmax|lightgbm|mlp)")
    if metrics.get("backbone_version") != feature_set.backbone_version:
        raise PipelineError(f"head {name!r} was fitted on features of {metrics.get('backbone_version')}, not of "
                            f"{feature_set.backbone_version}: fit it again")
    fs, path = fs_path(folder)
    files = {file: fs.cat_file(f"{path}/{file}") for file in heads.SAVED[metrics["head"]] if fs.exists(f"{path}/{file}")}
    return SavedHead(name, metrics, files, heads.load(metrics["head"], files, len(metrics["classes"])))


def saved_heads(set_uri: str) -> list[str]:
    """The names of the heads saved under the set's ``_heads/``, sorted with their numbers as
    numbers (``softmax-block7`` before ``softmax-block10``: shallow layers first)."""
    fs, path = fs_path(layout.heads_uri(set_uri))
    if not fs.exists(path):
        return []
    return sorted((entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)
                   if fs.exists(f"{entry.rstrip('/')}/metrics.json")), key=_numbers_as_numbers)


def _numbers_as_numbers(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def head_summaries(set_uri: str) -> list[dict]:
    """What ``tlfs describe`` says of each saved head: its kind, layers and views, its
    validation and test accuracy, test balanced accuracy and calibration error (None for a head
    fitted before it was recorded), whether it is balanced, the set version and plan it was fitted on, and the bytes of
    the classifier shipped beside it (None where there is none)."""
    summaries = []
    for name in saved_heads(set_uri):
        folder = f"{layout.heads_uri(set_uri)}/{name}"
        metrics = read_json_if_exists(f"{folder}/metrics.json")
        fs, path = fs_path(f"{folder}/{CLASSIFIER_FILE}")
        try:  # one request where there is a classifier, one where there is none
            shipped = fs.info(path)["size"]
        except FileNotFoundError:
            shipped = None
        summaries.append({"name": name, "head": metrics["head"], "layers": metrics["layers"],
                          "views": metrics.get("views", ["original"]), "validation_accuracy": metrics.get("validation_accuracy"),
                          "test_accuracy": metrics.get("test_accuracy"), "balanced": metrics.get("balanced", False),
                          "validation_balanced_accuracy": metrics.get("validation_balanced_accuracy"),
                          "validation_log_loss": metrics.get("validation_log_loss"),
                          "test_balanced_accuracy": metrics.get("test_balanced_accuracy"),
                          "calibration_error": metrics.get("calibration_error"), "version": metrics.get("version"),
                          "plan_id": metrics.get("plan_id"), "classifier_bytes": shipped})
    return summaries


BOARD_COLUMNS = ["dataset", "backbone_version", "name", "head", "layers", "views", "validation_accuracy", "test_accuracy",
                 "validation_balanced_accuracy", "test_balanced_accuracy", "validation_log_loss", "balanced",
                 "calibration_error", "version",
                 "current", "classifier_bytes", "best", "best_balanced"]


def head_board(store: str | None = None, dataset: str | None = None):
    """A pandas frame of ``BOARD_COLUMNS``: every saved head of every committed set of the
    store (or of ``dataset``'s sets), each dataset's heads in the order of :func:`preference`
    (then by backbone version, and each set's in :func:`saved_heads`' order). ``current``: fitted on the set's newest
    version. ``best``: the dataset's first current plain head: chosen by validation accuracy,
    never by test accuracy, which stays an honest estimate. ``best_balanced``: the same among
    its balanced heads (``fit --balanced``), by validation balanced accuracy, what they aim at."""
    import pandas as pd

    from tlfs.features.reader import list_sets

    sets = list_sets(store)
    if dataset is not None:
        if dataset not in set(sets["dataset"]):
            raise PipelineError(f"no committed feature set of {dataset!r} in the store; it has "
                                f"{', '.join(sorted(set(sets['dataset']))) or 'none'}")
        sets = sets[sets["dataset"] == dataset]
    rows = [{"dataset": s.dataset, "backbone_version": s.backbone_version, **{k: h[k] for k in BOARD_COLUMNS if k in h},
             "current": h["plan_id"] == s.plan_id}
            for s in sets.itertuples() for h in head_summaries(s.uri)]
    board = _ranked(pd.DataFrame(rows, columns=BOARD_COLUMNS[:-2]), "validation_accuracy").reset_index(drop=True)
    board = board.astype({"current": bool, "balanced": bool})  # typed even when empty: a mask, not a column list
    current = board[board["current"]]
    for column, heads_of_kind, measure in (("best", current[~current["balanced"]], "validation_accuracy"),
                                           ("best_balanced", current[current["balanced"]], "validation_balanced_accuracy")):
        chosen = _ranked(heads_of_kind[heads_of_kind[measure].notna()], measure)
        board[column] = board.index.isin(chosen.groupby("dataset", sort=False).head(1).index)
    return board


def _ranked(board, measure: str):
    """``board``'s rows, each dataset's in the order of :func:`preference` by ``measure``."""
    ranks = [preference(kind, accuracy, loss)
             for kind, accuracy, loss in zip(board["head"], board[measure], board["validation_log_loss"])]
    # stable: of equals, each set's heads stay in saved_heads' order
    return (board.assign(_rank=ranks).sort_values(["dataset", "_rank", "backbone_version"], kind="stable")
            .drop(columns="_rank"))
