"""Fitting heads on a committed feature set: ``fit`` (one head, one layer or a
concatenation) and ``sweep`` (softmax on every layer: which layer transfers best)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from tlfs.features import layout
from tlfs.features.feature_set import FeatureSet
from tlfs.features.storage import atomic_put_file
from tlfs.models import heads
from tlfs.models.fit_data import Examples, FitData
from tlfs.pipeline.class_balance import balanced_accuracy, class_balance
from tlfs.pipeline.errors import CannotFit, PipelineError
from tlfs.pipeline.holdout import HOLDOUT_HINT
from tlfs.pipeline.plotting import saved_figure
from tlfs.pipeline.saved_heads import head_name, preference

PREDICTIONS_FILE = "test_predictions.parquet"  # beside a saved head: its prediction for each test image

VALIDATION_FRACTION = 0.1
HEAD_SUMMARY = ("head", "layers", "test_accuracy", "validation_accuracy", "test_balanced_accuracy",
                "validation_balanced_accuracy", "validation_log_loss", "balanced", "saved_to")  # what a task hands on


def validation_split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    if present < 2:
        raise CannotFit(f"the {len(y)} training images are all of one class: a head tells two or more classes apart"
                        if len(y) else "no training images")
    size = max(int(round(VALIDATION_FRACTION * len(y))), present)  # at least one image per class
    if len(y) - size < present:
        raise CannotFit(f"too few training images ({len(y)}) to hold out a validation split for {present} classes")
    stratify = y if counts[counts > 0].min() >= 2 else None
    return train_test_split(index, test_size=size, random_state=seed, stratify=stratify)


CONFIDENCE_THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.99)  # the probabilities at which a head's figures are given
CALIBRATION_BINS = 15


def metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """The test figures of a head's probabilities: accuracy (overall, per class, the confusion
    matrix) and how far its probability can be trusted."""
    from sklearn.metrics import confusion_matrix

    y_pred = proba.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    totals = matrix.sum(axis=1)
    per_class = {name: (float(matrix[i, i] / totals[i]) if totals[i] else None) for i, name in enumerate(classes)}
    return {
        "test_accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "test_balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": classes,
        **confidence(proba.max(axis=1) if len(proba) else np.zeros(0), y_pred == y_true),
    }


def frequent_confusions(matrix: list[list[int]], count: int) -> list[tuple[int, int, int]]:
    """The ``count`` commonest mistakes of a confusion matrix (rows: the true class) as
    ``(images, true class, class taken for)``, the commonest first (of equals, in the classes' order)."""
    classes = range(len(matrix))
    mistakes = [(matrix[i][j], i, j) for i in classes for j in classes if i != j and matrix[i][j]]
    return sorted(mistakes, key=lambda m: (-m[0], m[1], m[2]))[:count]


def confidence(probability: np.ndarray, correct: np.ndarray) -> dict:
    """For each of ``CONFIDENCE_THRESHOLDS``: the share of the images whose predicted class
    has at least that probability, and the accuracy among them (what predictions above a
    threshold are worth); and the expected calibration error over ``CALIBRATION_BINS`` equal
    bins of probability (the gap between how sure the head is and how often it is right)."""
    at_least = {}
    for threshold in CONFIDENCE_THRESHOLDS:
        chosen = probability >= threshold
        at_least[str(threshold)] = {"share": round(float(chosen.mean()), 4) if len(chosen) else None,
                                    "accuracy": round(float(correct[chosen].mean()), 4) if chosen.any() else None}
    bins = np.minimum((probability * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = sum(abs(correct[bins == b].mean() - probability[bins == b].mean()) * (bins == b).mean()
                for b in np.unique(bins))
    return {"at_probability": at_least, "calibration_error": round(float(error), 4) if len(probability) else None}


def _wrapped(title: str, inches: float) -> str:
    """``title`` in lines that fit a figure ``inches`` wide (at 10 pt), broken at spaces and
    after the ``+`` of joined layer names."""
    import textwrap

    lines = textwrap.wrap(title.replace("+", "+ "), width=max(16, int(inches * 11)), break_long_words=False)
    return "\n".join(line.replace("+ ", "+") for line in lines)


CONFUSION_INCHES = 12.0  # the confusion matrix's largest side
CONFUSION_COUNTS_UP_TO = 30  # classes: up to this many, each cell shows its count
CONFUSION_NAMES_UP_TO = 100  # classes: up to this many, each row and column is named


def confusion_png(path: Path, matrix: list[list[int]], classes: list[str], title: str) -> Path:
    m = np.asarray(matrix)
    n = len(classes)
    # coloured by each true class's share (its row), so that a rare class's row reads as a common one's
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    # a cell 0.6 inch a class, less where the classes are many (the figure at most CONFUSION_INCHES wide: 200
    # classes at 0.6 inch took 82 s and 8.6 GB to draw), and room for the title's lines where they are few
    cell = min(0.6, (CONFUSION_INCHES - 1.0) / n)
    small = {"fontsize": max(3.0, 10 * cell / 0.6)} if cell < 0.6 else {}
    with saved_figure(path, (max(3.6, 1.0 + cell * n), max(3.2, 0.6 + cell * n))) as (fig, ax):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if n <= CONFUSION_NAMES_UP_TO:
            ax.set_xticks(range(n), classes, rotation=45, ha="right", **small)
            ax.set_yticks(range(n), classes, **small)
        ax.set_xlabel("predicted" if n <= CONFUSION_NAMES_UP_TO else "predicted (the classes in the set's order)")
        ax.set_ylabel("true")
        ax.set_title(_wrapped(title, fig.get_figwidth()), fontsize=10)
        if n <= CONFUSION_COUNTS_UP_TO:  # each cell's count written in it
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7 * cell / 0.6,
                            color="white" if shares[i, j] > 0.5 else "black")
    return path


def publish_files(local_files: list[Path], target_uri: str) -> None:
    """Each file appears whole or not at all (a reader never sees a torn head)."""
    for f in local_files:
        atomic_put_file(f, f"{target_uri.rstrip('/')}/{f.name}")


def fit(feature_set: FeatureSet, layers: list[str], head: str = "softmax", log: Callable = print,
        views: list[str] | None = None, balanced: bool = False) -> dict:
    """One head on one layer, or on several side by side (``["all"]``: every layer).
    ``views``: which stored views to use (default: all; see :func:`_fit_and_save`).
    ``balanced``: the head predicts as if every class were equally common
    (:func:`~tlfs.models.fit_data.class_offsets`), saved as ``<head>-<layers>-balanced``."""
    require_train_and_test(feature_set)
    layers = list(feature_set.layers) if layers == ["all"] else layers
    views = stored_views(feature_set, views)
    train, test = read_views(feature_set, layers, views)
    _say_what_the_classes_are(train, test, feature_set.classes, balanced, log)
    return _fit_and_save(feature_set, layers, head, train, test, log, balanced)


def _say_what_the_classes_are(train: dict, test: dict, classes: list[str], balanced: bool, log: Callable) -> None:
    """Where the training split's classes are imbalanced and the heads are not balanced, say
    so; and name the classes of test images that no training image has, which no head can
    predict (``train``, ``test``: ``{view: (X, y, ids)}``)."""
    y_train, y_test = next(iter(train.values()))[1], next(iter(test.values()))[1]
    balance = class_balance(y_train, classes)
    if balance.imbalanced and not balanced:
        log(f"  {balance.line()}: the balanced accuracy weighs each class alike; --balanced has the head predict as if "
            "they were equally common")
    trained = set(np.unique(y_train).tolist())
    unseen = {classes[k]: int(n) for k, n in enumerate(np.bincount(y_test, minlength=len(classes))) if n and k not in trained}
    if unseen:
        log(f"  no training image of {', '.join(unseen)}: no head predicts {'it' if len(unseen) == 1 else 'them'}, so "
            f"the {sum(unseen.values())} test images of {'it' if len(unseen) == 1 else 'them'} count as wrong")


def stored_views(feature_set: FeatureSet, views: list[str] | None) -> list[str]:
    """The views a head uses: those asked for (each one the set must store), or every view
    the set stores; in the set's order, the original first, whatever the order asked in."""
    if not views:
        return feature_set.views
    missing = [v for v in views if v not in feature_set.views]
    if missing:
        raise PipelineError(f"{feature_set.uri} has no {missing[0]!r} view; it has {', '.join(feature_set.views)}")
    return [view for view in feature_set.views if view in views]


def read_views(feature_set: FeatureSet, layers: list[str], views: list[str]) -> tuple[dict, dict]:
    """``({view: (X, y, ids)} of train, the same of test)``: each layer and view read once."""
    return tuple({view: feature_set.matrices(layers, split, view=view) for view in views} for split in ("train", "test"))


def require_train_and_test(feature_set: FeatureSet) -> None:
    if "train" not in feature_set.splits or "test" not in feature_set.splits:
        raise CannotFit(f"{feature_set.uri} needs a train and a test split to fit a head; it has "
                            f"{', '.join(feature_set.splits)} ({HOLDOUT_HINT})")
    require_images(feature_set, ("train", "test"), "to fit a head")


def require_images(feature_set: FeatureSet, splits, needed_for: str, error: type[PipelineError] = CannotFit) -> None:
    """Each of ``splits`` (which the set has) holds an image: a split whose every image was
    rejected is named with its counts, before any work meets it empty."""
    for split in dict.fromkeys(splits):
        counts = feature_set.manifest["counts"].get(split, {})
        if not counts.get("written"):
            raise error(f"the {split} split of {feature_set.uri} holds no image {needed_for}: "
                        f"{counts.get('read', 0)} read, {counts.get('rejected', 0)} rejected (tlfs describe lists why)")


def fitting_rows(train: dict, fit_idx: np.ndarray, val_idx: np.ndarray) -> tuple[Examples, Examples]:
    """The examples to fit on and to validate on, from ``{view: (X, y, ids)}`` of the
    training split, the original view first: every view's rows of the ``fit_idx``
    images, and the original view of the ``val_idx`` ones (see :func:`_fit_and_save`)."""
    views = list(train)
    X, y, _ = train[views[0]]
    X_fit = np.concatenate([train[view][0][fit_idx] for view in views]) if len(views) > 1 else X[fit_idx]
    return Examples(X_fit, np.tile(y[fit_idx], len(views))), Examples(X[val_idx], y[val_idx])


def view_averaged_proba(head: heads.Head, test: dict) -> np.ndarray:
    """The head's test probabilities, averaged over the stored views (``{view: (X, y, ids)}``)."""
    return sum(head.predict_proba(X) for X, _, _ in test.values()) / len(test)


def _fit_and_save(feature_set: FeatureSet, layers: list[str], head: str, train: dict, test: dict, log: Callable,
                  balanced: bool = False) -> dict:
    """``train``, ``test``: ``{view: (X, y, ids)}``, the original view first. Other views
    (the flipped image) add training rows, of the training images only, so that no
    validation image is seen in any view; validation is on the original view, and test
    predictions average the head's probabilities over the views."""
    views = list(train)
    X, y, _ = train[views[0]]
    yt = test[views[0]][1]
    classes = feature_set.classes
    fit_idx, val_idx = validation_split(y)
    log(f"fitting {head} on {'+'.join(layers)} ({X.shape[1]} dims), views {'+'.join(views)}: {len(fit_idx)} train images, "
        f"{len(val_idx)} validation, {len(yt)} test{', balanced' if balanced else ''}")
    block_dims = [feature_set.layers[layer] for layer in layers] if len(layers) > 1 else None
    fit_rows, validation_rows = fitting_rows(train, fit_idx, val_idx)
    fitted, seconds = heads.fit(head, FitData(fit_rows, validation_rows, len(classes), block_dims, balanced), log=log)
    proba = view_averaged_proba(fitted, test)
    validation_proba = fitted.predict_proba(validation_rows.X)
    result = {
        "dataset": feature_set.dataset,
        "backbone_version": feature_set.backbone_version,
        "plan_id": feature_set.plan_id,  # which committed features this head was fitted on
        "version": feature_set.version,  # that commit's number in the set's history
        "head": head,
        "layers": layers,
        "dims": int(X.shape[1]),
        "views": views,
        "n_train": int(len(fit_idx)),
        "n_validation": int(len(val_idx)),
        "n_test": int(len(yt)),
        "validation_accuracy": fitted.val_accuracy,
        "validation_balanced_accuracy": balanced_accuracy(validation_rows.y, validation_proba.argmax(axis=1)),
        "validation_log_loss": log_loss(validation_rows.y, validation_proba),
        "balanced": balanced,
        "params": fitted.params,
        "fit_seconds": round(seconds, 2),
        **metrics(yt, proba, classes),
    }
    name = head_name(head, layers, balanced)
    target = f"{layout.heads_uri(feature_set.uri)}/{name}"
    with tempfile.TemporaryDirectory(prefix="tlfs-head-") as tmp:
        folder = Path(tmp)
        files = fitted.save(folder)
        files.append(heads.write_json(folder / "metrics.json", result))
        files.append(confusion_png(folder / "confusion.png", result["confusion_matrix"], classes,
                                   f"{head}{' (balanced)' if balanced else ''} on {'+'.join(layers)}: test accuracy "
                                   f"{result['test_accuracy']:.3f}, balanced accuracy {result['test_balanced_accuracy']:.3f}"))
        files.append(test_predictions(folder / PREDICTIONS_FILE, test[views[0]][2], yt, proba, classes))
        publish_files(files, target)
    result["saved_to"] = target
    return result


def test_predictions(path: Path, ids: np.ndarray, labels: np.ndarray, proba: np.ndarray, classes: list[str]) -> Path:
    """The head's prediction for each test image, the ones its test accuracy counts:
    ``image_id``, ``label_name``, ``predicted``, ``probability`` (of the class predicted),
    ``correct``; for error analysis in pandas (the most confident mistakes, a class's)."""
    import pandas as pd

    predicted = proba.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    pd.DataFrame({"image_id": ids, "label_name": names[labels], "predicted": names[predicted],
                  "probability": proba[np.arange(len(predicted)), predicted].astype(np.float32),
                  "correct": predicted == labels}).to_parquet(path, index=False)
    return path


def sweep_png(path: Path, accuracies: dict[str, float], dims: dict[str, int], title: str, chosen: str | None = None,
              validation: dict[str, float] | None = None, measure: str = "accuracy") -> Path:
    """The per-layer test accuracies as bars, the ``chosen`` layer's in another colour, and
    the ``validation`` accuracies that chose it as marks across the bars."""
    names = list(accuracies)
    with saved_figure(path, (1.2 + 0.9 * len(names), 3.9)) as (fig, ax):
        bars = ax.bar(range(len(names)), [accuracies[n] * 100 for n in names],
                      color=["#DD8452" if n == chosen else "#4C72B0" for n in names], label="test")
        if validation:
            ax.plot(range(len(names)), [validation[n] * 100 for n in names], linestyle="none", marker="_",
                    markersize=28, markeredgewidth=2, color="black", label="validation")
            ax.legend(loc="lower right", fontsize=8, framealpha=0.9)  # over the bars' feet, not their figures
        ax.set_xticks(range(len(names)), [f"{n}\n({dims[n]}-d)" for n in names])
        ax.set_ylabel(f"{measure} (%)")
        ax.set_title("\n".join(_wrapped(line, fig.get_figwidth()) for line in title.splitlines()), fontsize=10)
        for bar, n in zip(bars, names):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() - 2, f"{accuracies[n] * 100:.1f}", ha="center",
                    va="top", fontsize=8, color="white")  # inside the bar: the validation mark sits on its top
        ax.set_ylim(0, 105)
    return path


def best_layer(validation: dict[str, float], log_losses: dict[str, float] | None = None) -> str:
    """The layer whose head scored best on the validation images (held out of the training
    split), never on the test split: the test accuracy reported for it is then an honest
    estimate, not the best of several draws. Among equals (frequent where the validation
    images are few: ten of them score in steps of 0.1), the one whose head gave their labels
    the most probability (the lowest ``log_losses``); then the earliest (the sweep goes
    shallow to deep, so the narrowest as a rule)."""
    losses = log_losses or {}
    # the rule heads are ranked by (min keeps the first of equals: the earliest layer)
    return min(validation, key=lambda layer: preference("softmax", validation[layer], losses.get(layer)))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float | None:
    """The mean negative log of the probability a head gave each image's label (None for no image)."""
    if not len(y):
        return None
    return round(float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)).mean()), 6)


def sweep(feature_set: FeatureSet, log: Callable = print, views: list[str] | None = None, balanced: bool = False) -> dict:
    """Softmax on every stored layer, shallow to deep; each layer read once. The best layer
    by validation accuracy (:func:`best_layer`) is chosen, and its softmax head is saved as
    ``softmax-<layer>`` like any fitted head. ``balanced``: every head balanced (see
    :func:`fit`), the best layer chosen by the validation images' balanced accuracy."""
    require_train_and_test(feature_set)
    views = stored_views(feature_set, views)
    accuracies: dict[str, float] = {}
    validation: dict[str, float] = {}
    log_losses: dict[str, float] = {}  # the validation images', which break ties of accuracy
    balanced_accuracies: dict[str, dict[str, float]] = {"validation": {}, "test": {}}
    fitted: dict[str, dict] = {}
    dims = feature_set.layers
    for n, layer in enumerate(dims):
        train, test = read_views(feature_set, [layer], views)
        if not n:  # the labels are the same for every layer: said once
            _say_what_the_classes_are(train, test, feature_set.classes, balanced, log)
        result = _fit_and_save(feature_set, [layer], "softmax", train, test, log, balanced)
        accuracies[layer] = result["test_accuracy"]
        validation[layer] = result["validation_accuracy"]
        log_losses[layer] = result["validation_log_loss"]
        balanced_accuracies["validation"][layer] = result["validation_balanced_accuracy"]
        balanced_accuracies["test"][layer] = result["test_balanced_accuracy"]
        fitted[layer] = {k: result[k] for k in HEAD_SUMMARY}
        log(f"{layer:>12}  {dims[layer]:>5}-d  validation accuracy {validation[layer]:.4f}  test accuracy {accuracies[layer]:.4f}"
            + (f"  balanced: validation {balanced_accuracies['validation'][layer]:.4f}, test "
               f"{balanced_accuracies['test'][layer]:.4f}" if balanced else ""))
    # what the plot shows and the choice is made on: the balanced accuracies for balanced heads
    shown = balanced_accuracies if balanced else {"validation": validation, "test": accuracies}
    kind, measure = ("balanced ", "balanced accuracy") if balanced else ("", "accuracy")
    chosen_by = f"validation_{measure.replace(' ', '_')}"
    best = best_layer(shown["validation"], log_losses)
    summary = {
        "dataset": feature_set.dataset,
        "backbone_version": feature_set.backbone_version,
        "plan_id": feature_set.plan_id,
        "version": feature_set.version,
        "head": "softmax",
        "layers": accuracies,  # test accuracy, by layer
        "validation": validation,  # validation accuracy, by layer: what chose the best layer, unless balanced
        "validation_log_loss": log_losses,  # by layer: what breaks a tie of the validation accuracies
        "balanced_accuracy": balanced_accuracies,  # {"validation": by layer, "test": by layer}
        "balanced": balanced,
        "dims": dims,
        "views": views,
        "best_layer": best,
        "chosen_by": chosen_by,
        "test_accuracy": accuracies[best],
    }
    heads_uri = layout.heads_uri(feature_set.uri)
    with tempfile.TemporaryDirectory(prefix="tlfs-sweep-") as tmp:
        folder = Path(tmp)
        files = [
            heads.write_json(folder / "sweep.json", summary),
            sweep_png(folder / "sweep.png", shown["test"], dims, f"{feature_set.dataset}: {kind}softmax per layer "
                      f"({feature_set.backbone_version})\n{best} chosen on validation {measure}", chosen=best,
                      validation=shown["validation"], measure=measure),
        ]
        publish_files(files, heads_uri)
    summary["saved_to"] = heads_uri
    summary["best_head"] = fitted[best]  # the softmax head on the best layer, saved like any other
    return summary
