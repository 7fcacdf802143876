"""Would more labelled images help? (``tlfs learning-curve``): one head fitted on growing
shares of the training split, each scored on the same validation and test images. Where the
accuracy still climbs at the whole split, more labels (or fine-tuning) pay; where it has
flattened, they do not.

Each class's training images are put in one random order once; a share takes the first of
each class's images, so every smaller training set is part of every larger one and the
points differ by the images added, not by the draw. The validation images (``tlfs fit``'s
10 %) are held out of the whole split first, so every point is scored on the same ones."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlfs.pipeline.errors import PipelineError

DEFAULT_SHARES = (0.05, 0.1, 0.25, 0.5, 1.0)
CURVE_PREFIX = "learning_curve-"  # of the files a curve is saved as beside the set's heads
WORTH_A_DOUBLING = 0.01  # validation accuracy a doubling of the labels adds from which more labels are worth having


@dataclass(frozen=True)
class LearningCurveRequest:
    dataset: str
    backbone: str
    # one layer or several side by side (("all",): every one); (): the sweep's best layer, or the deepest without one
    layers: tuple[str, ...] = ()
    head: str = "softmax"
    shares: tuple[float, ...] = DEFAULT_SHARES  # of the training images (after the validation images are held out)
    repeats: int = 1  # draws of the training images (each class's order): the spread of each point and of the gain
    views: tuple[str, ...] = ()  # stored views used; () every view the set has
    store: str | None = None
    version: int | None = None
    balanced: bool = False  # balanced heads (tlfs fit --balanced), the curve then of their balanced accuracy


def learning_curve(request: LearningCurveRequest, log: Callable[[str], None] = print) -> dict:
    """The curve (one point a share: images, images a class, validation and test accuracy and
    balanced accuracy, seconds), the gain of the last doubling of the images (of the
    ``measure``: the accuracy, or for balanced heads the balanced accuracy), and where it was
    saved (beside the set's heads: ``learning_curve-{head}-{layers}[-balanced].json`` and ``.png``)."""
    from tlfs.features import layout
    from tlfs.features.reader import open_set
    from tlfs.models.heads import write_json
    from tlfs.pipeline.fit import publish_files, read_views, require_train_and_test, stored_views, validation_split
    from tlfs.pipeline.saved_heads import head_name, layers_to_use

    shares = sorted(set(request.shares))
    if not shares or shares[0] <= 0 or shares[-1] > 1:
        raise PipelineError(f"shares {', '.join(map(str, request.shares))}: each above 0 and at most 1")
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    layers = layers_to_use(feature_set, request.layers)
    require_train_and_test(feature_set)
    views = stored_views(feature_set, list(request.views))
    train, test = read_views(feature_set, layers, views)
    y = train[views[0]][1]
    fit_pool, validation = validation_split(y)
    block_dims = [feature_set.layers[layer] for layer in layers] if len(layers) > 1 else None
    log(f"fitting {request.head} on {'+'.join(layers)} with {', '.join(f'{s:g}' for s in shares)} of {len(fit_pool)} "
        f"training images ({len(validation)} validation, {len(test[views[0]][1])} test)"
        + (f", {request.repeats} draws" if request.repeats > 1 else "") + (", balanced" if request.balanced else ""))
    measure = "balanced_accuracy" if request.balanced else "accuracy"
    draws = []
    for draw in range(request.repeats):
        ordered = _class_order(y, fit_pool, seed=draw)
        points = []
        for share in shares:
            chosen = _first_of_each_class(ordered, y, share)
            points.append({**_point(train, test, chosen, validation, len(feature_set.classes), request.head, block_dims,
                                    request.balanced), "share": share})
            log(f"  {share:>5g}  {points[-1]['images']:>7} images ({points[-1]['per_class']:g} a class)  validation "
                f"{points[-1][f'validation_{measure}']:.4f}  test {points[-1][f'test_{measure}']:.4f}  "
                f"({points[-1]['seconds']:.1f}s)" + (f"  draw {draw + 1}" if request.repeats > 1 else ""))
        draws.append(points)
    points = _averaged(draws)
    gains = [last_doubling_gain(points_of_draw, measure=measure) for points_of_draw in draws]
    result = {"dataset": feature_set.dataset, "backbone_version": feature_set.backbone_version,
              "plan_id": feature_set.plan_id, "version": feature_set.version, "head": request.head, "layers": layers,
              "views": views, "balanced": request.balanced, "measure": measure,
              "validation_images": int(len(validation)), "repeats": request.repeats, "points": points,
              "last_doubling_gain": last_doubling_gain(points, measure=measure),
              "last_doubling_gain_std": _spread(gains) if request.repeats > 1 and None not in gains else None}
    name = f"{CURVE_PREFIX}{head_name(request.head, layers, request.balanced)}"
    target = layout.heads_uri(feature_set.uri)
    with tempfile.TemporaryDirectory(prefix="tlfs-curve-") as tmp:
        folder = Path(tmp)
        publish_files([write_json(folder / f"{name}.json", result),
                  curve_png(folder / f"{name}.png", points, f"{feature_set.dataset}: {request.head}"
                            f"{' (balanced)' if request.balanced else ''} on {'+'.join(layers)} "
                            f"({feature_set.backbone_version})", measure)], target)
    result["saved_to"] = f"{target}/{name}.json"
    return result


def stored_curves(set_uri: str, plan_id: str) -> list[dict]:
    """The learning curves saved beside the set's heads and drawn on its features as
    committed by ``plan_id`` (another version's are of other images), by file name."""
    from tlfs.features import layout
    from tlfs.features.storage import fs_path, read_json_if_exists

    fs, path = fs_path(layout.heads_uri(set_uri))
    if not fs.exists(path):
        return []
    names = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    curves = [read_json_if_exists(f"{layout.heads_uri(set_uri)}/{name}") for name in names
              if name.startswith(CURVE_PREFIX) and name.endswith(".json")]
    return [curve for curve in curves if curve and curve.get("plan_id") == plan_id]


def _averaged(draws: list[list[dict]]) -> list[dict]:
    """One point a share over the draws: the mean accuracies (and their standard deviation,
    ``validation_std`` and ``test_std``, ``validation_balanced_std`` and ``test_balanced_std``,
    where there are several draws), the seconds of all."""
    if len(draws) == 1:
        return draws[0]
    points = []
    for same in zip(*draws):
        point = {**same[0], "seconds": round(sum(p["seconds"] for p in same), 1)}
        for key in ("validation_accuracy", "test_accuracy", "validation_balanced_accuracy", "test_balanced_accuracy"):
            values = [p[key] for p in same]
            point[key] = round(float(np.mean(values)), 4)
            point[key.replace("_accuracy", "_std")] = _spread(values)
        points.append(point)
    return points


def _spread(values: list[float]) -> float:
    return round(float(np.std(values, ddof=1)), 4)


def _class_order(y: np.ndarray, pool: np.ndarray, seed: int = 0) -> dict[int, np.ndarray]:
    """Each class's images of ``pool`` in one random order (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    return {int(k): rng.permutation(pool[y[pool] == k]) for k in np.unique(y[pool])}


def _first_of_each_class(ordered: dict[int, np.ndarray], y: np.ndarray, share: float) -> np.ndarray:
    """The first ``share`` of each class's images (at least one), in the order given."""
    return np.sort(np.concatenate([images[:max(1, int(round(share * len(images))))] for images in ordered.values()]))


def _point(train: dict, test: dict, chosen: np.ndarray, validation: np.ndarray, classes: int, head: str,
           block_dims: list[int] | None, balanced: bool = False) -> dict:
    from tlfs.models import heads
    from tlfs.models.fit_data import FitData
    from tlfs.pipeline.class_balance import balanced_accuracy
    from tlfs.pipeline.fit import fitting_rows, view_averaged_proba

    started = time.perf_counter()
    fit_rows, validation_rows = fitting_rows(train, chosen, validation)
    fitted, _ = heads.fit(head, FitData(fit_rows, validation_rows, classes, block_dims, balanced), log=lambda *_: None)
    yt = next(iter(test.values()))[1]
    predicted = view_averaged_proba(fitted, test).argmax(axis=1)
    images_a_class = np.bincount(next(iter(train.values()))[1][chosen])
    validation_balanced = balanced_accuracy(validation_rows.y, fitted.predict(validation_rows.X))
    return {"images": int(len(chosen)), "per_class": float(np.median(images_a_class[images_a_class > 0])),
            "validation_accuracy": round(float(fitted.val_accuracy), 4),
            "test_accuracy": round(float((predicted == yt).mean()), 4),
            "validation_balanced_accuracy": round(validation_balanced, 4),
            "test_balanced_accuracy": round(balanced_accuracy(yt, predicted), 4),
            "seconds": round(time.perf_counter() - started, 1)}


def last_doubling_gain(points: list[dict], last: int = 3, measure: str = "accuracy") -> float | None:
    """Validation accuracy (or, with ``measure``, balanced accuracy) gained a doubling of the
    training images over the ``last`` points (a least-squares line in the logarithm of the
    images: what doubling the labels again would add if the curve went on as it last went;
    fewer points swing more with a few validation images). None with one point."""
    tail = points[-last:]
    if len(tail) < 2:
        return None
    doublings = np.log2([p["images"] for p in tail])
    accuracy = np.array([p[f"validation_{measure}"] for p in tail])
    return round(float(np.polyfit(doublings, accuracy, 1)[0]), 4)


def curve_png(path: Path, points: list[dict], title: str, measure: str = "accuracy") -> Path:
    from tlfs.pipeline.plotting import saved_figure

    images = [p["images"] for p in points]
    spread_of = measure.replace("accuracy", "std")  # std, balanced_std
    with saved_figure(path, (5.6, 3.8)) as (fig, ax):
        for key, marker in (("validation", "o"), ("test", "s")):
            spread = [p[f"{key}_{spread_of}"] * 100 for p in points] if f"{key}_{spread_of}" in points[0] else None
            ax.errorbar(images, [p[f"{key}_{measure}"] * 100 for p in points], yerr=spread, marker=marker, capsize=3,
                        label=key)
        ax.set_xscale("log", base=2)
        ax.set_xticks(images, [f"{n:,}" for n in images])
        ax.minorticks_off()
        ax.set_xlabel("training images")
        ax.set_ylabel(f"{measure.replace('_', ' ')} (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path
