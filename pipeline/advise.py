"""``tlfs advise``: which of the four transfer cases a dataset is, measured.

* **size** — training images per class (the median over classes). ``large`` from
  ``LARGE_IMAGES_PER_CLASS`` (1,000) up: enough to fine-tune without overfitting.
* **similarity to ImageNet** — how familiar the images are to the pretrained network:
  one minus the mean normalised entropy of its ImageNet predictions,
  ``1 - H(p) / log(1000)``, over a class-balanced sample of the training images. The
  predictions come from the pretrained classifier applied to the stored last-layer
  features (exactly the network's own logits). Natural photos of ImageNet-like objects
  get confident predictions (high score); microscope slides, spectrograms or
  synthetic patterns get diffuse ones (low score). ``similar`` from
  ``SIMILAR_SCORE`` (0.35) up.

Everything is read from the committed feature set (it runs right after the commit in
the DAG): the labels of its training split, a class-balanced sample of its stored
features of the classifier's input layer, and the classifier saved beside the ONNX graph
at export (models/classifier.py). No sources are read again, nothing is extracted, no
torch is loaded.
* if a layer sweep is stored, the layer it chose (by validation accuracy, pipeline/fit.best_layer)
  is the layer of a linear classifier, where this version holds it (:func:`sweep_for`).

Thresholds are overridable (``--large-per-class``, ``--similar-score``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

LARGE_IMAGES_PER_CLASS = 1000
SIMILAR_SCORE = 0.35
SIMILARITY_SAMPLE = 1000  # training images scored for similarity (class-balanced)


def similarity_from_logits(logits: np.ndarray) -> dict:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1) / np.log(p.shape[1])
    return {
        "score": float(1.0 - entropy.mean()),
        "mean_max_probability": float(p.max(axis=1).mean()),
        "images": int(len(p)),
        "measure": "1 - mean normalised entropy of the pretrained ImageNet classifier's predictions",
    }


@dataclass(frozen=True)
class Thresholds:
    """Where the advisor draws its lines: a median of ``large_per_class`` training images
    per class makes a dataset large; a similarity score of ``similar_score`` makes it
    similar to ImageNet."""

    large_per_class: int = LARGE_IMAGES_PER_CLASS
    similar_score: float = SIMILAR_SCORE

    @classmethod
    def given(cls, large_per_class: int | None = None, similar_score: float | None = None) -> "Thresholds":
        """From a flag or a Param that may be unset (None, or 0 for the size): the defaults."""
        return cls(large_per_class or LARGE_IMAGES_PER_CLASS, SIMILAR_SCORE if similar_score is None else similar_score)


def decide(per_class: float, similarity: float | None, thresholds: Thresholds, sweep: dict | None,
           layers: list[str]) -> tuple[str, dict]:
    """The transfer case and its action, for a set of tap ``layers`` (earliest first).
    ``similarity`` None (not measurable): the case names the size alone
    (``small_unmeasured``, ``large_unmeasured``) and the action is the one that does not
    depend on it: the sweep's best layer, or fine-tuning."""
    large, last_layer = per_class >= thresholds.large_per_class, layers[-1]
    best = sweep.get("best_layer") if sweep else None
    if similarity is None:
        case = f"{'large' if large else 'small'}_unmeasured"
        if large:
            return case, {"do": "fine_tune", "freeze": "none", "init": "pretrained",
                          "why": "many images: fine-tune the whole network from the pretrained weights"}
        return case, {"do": "linear_classifier", "head": "softmax", "layer": best or last_layer,
                      "why": "few images: a linear classifier on " + ("the sweep's best layer" if best else
                                                                     "the last layer (run the sweep to choose one)")}
    similar = similarity >= thresholds.similar_score
    case = f"{'large' if large else 'small'}_{'similar' if similar else 'different'}"
    if case == "small_similar":
        layer = best or last_layer
        action = {"do": "linear_classifier", "head": "softmax", "layer": layer,
                  "why": "few images, ImageNet-like: a linear classifier on "
                         + ("the sweep's best layer" if best else "late features (run the sweep to choose a layer)")
                         + "; fine-tuning would overfit"}
    elif case == "small_different":
        layer = best or layers[len(layers) // 2]
        action = {"do": "linear_classifier", "head": "softmax", "layer": layer,
                  "why": "few images, unlike ImageNet: a classifier on "
                         + ("the sweep's best layer" if best else "a middle, more generic layer (run the sweep to choose one)")}
    elif case == "large_similar":
        action = {"do": "fine_tune", "freeze": "none", "init": "pretrained",
                  "why": "many images, ImageNet-like: fine-tune the whole network from the pretrained weights"}
    else:
        action = {"do": "fine_tune", "freeze": "none", "init": "pretrained",
                  "why": "many images, unlike ImageNet: fine-tune everything from pretrained init (or train from scratch)"}
    return case, action


def balanced_sample(y: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """Row numbers of a class-balanced sample of at most ``size`` rows: the first rows of
    each class in image-id order (deterministic)."""
    classes = np.unique(y)
    per_class = max(1, -(-size // max(len(classes), 1)))
    order = np.argsort(ids.astype(str), kind="stable")
    picked = [order[y[order] == c][:per_class] for c in classes]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)


def advise(feature_set, thresholds: Thresholds = Thresholds(), log: Callable[[str], None] = print) -> dict:
    """The transfer case of the committed ``feature_set`` (features.open_set) and what to do."""
    from tlfs.features import layout
    from tlfs.features.storage import read_json_if_exists
    from tlfs.models.classifier import load_classifier
    from tlfs.models.names import is_backbone
    from tlfs.pipeline.class_balance import class_balance
    from tlfs.pipeline.errors import PipelineError
    from tlfs.pipeline.fit import require_images
    from tlfs.pipeline.learning_curve import stored_curves
    from tlfs.pipeline.lineage import model_of

    fs = feature_set
    model = model_of(fs)
    card = model.card
    train_split = "train" if "train" in fs.splits else fs.splits[0]
    require_images(fs, (train_split,), "to measure the dataset by")
    missing = unmeasurable(card)
    if missing:
        _, labels, ids = fs.matrix(next(iter(fs.layers)), train_split)  # only its labels are needed
        similarity = {"score": None, "measured": False, "why": missing}
        log(f"similarity to ImageNet: cannot be measured: {missing}")
    else:
        weight, bias, layer = load_classifier(model)
        if layer not in fs.layers:
            raise PipelineError(f"advise reads layer {layer!r}, which {fs.uri} does not hold; extract it (or all layers)")
        X, labels, ids = fs.matrix(layer, train_split)
        sample = balanced_sample(labels, ids, SIMILARITY_SAMPLE)
        similarity = {**similarity_from_logits(X[sample] @ weight.T + bias), "measured": True}
        log(f"similarity to ImageNet: {similarity['score']:.3f} (mean top-1 probability "
            f"{similarity['mean_max_probability']:.3f}, {similarity['images']} images)")
    counts = Counter(fs.classes[label] for label in labels)
    per_class = float(np.median(list(counts.values()))) if counts else 0.0
    log(f"{fs.dataset}: {len(labels)} {train_split} images in {len(counts)} classes (median {per_class:.0f} per class)")
    balance = class_balance(labels, fs.classes) if len(labels) else None

    taps = list(fs.layers)
    sweep, note = sweep_for(read_json_if_exists(f"{layout.heads_uri(fs.uri)}/sweep.json"), fs.plan_id, fs.version, taps)
    if note:
        log(note)
    case, action = decide(per_class, similarity["score"], thresholds, sweep, taps)
    backbone = fs.backbone
    large_per_class, similar_score = thresholds.large_per_class, thresholds.similar_score
    similar = similarity["score"] >= similar_score if similarity["measured"] else None
    return {
        "dataset": fs.dataset,
        "backbone": backbone if is_backbone(backbone) else fs.backbone_version,
        "backbone_version": fs.backbone_version,
        "plan_id": fs.plan_id,
        "version": fs.version,
        "case": case,
        "size": {"images_per_class": per_class, "train_images": int(len(labels)), "classes": len(counts),
                 "large_from_per_class": large_per_class, "large": per_class >= large_per_class,
                 "balance": balance.to_json() if balance else None},
        "similarity": {**similarity, "similar_from": similar_score, "similar": similar},
        "sweep": sweep["layers"] if sweep else None,  # test accuracy by layer
        "sweep_validation": sweep.get("validation") if sweep else None,  # what chose the layer (absent from older sweeps)
        "sweep_version": sweep.get("version") if sweep else None,  # the set's version it was run on
        # what more labels would add, where tlfs learning-curve was run on this version: evidence beside the size
        "learning_curves": [{**{k: curve[k] for k in ("head", "layers", "points", "last_doubling_gain")},
                             "measure": curve.get("measure", "accuracy")}  # a curve saved before it named its measure
                            for curve in stored_curves(fs.uri, fs.plan_id)],
        "action": action,
    }


def sweep_for(stored: dict | None, plan_id: str, version: int, taps: list[str]) -> tuple[dict | None, str | None]:
    """The stored layer sweep if the advice may take its layer, and a line to say of it.
    A sweep is of the version it was run on: another version's is taken (and said to be
    another's) while this version holds the layer it chose, and left out where it does not
    (a version extracted with other ``--layers``), never naming a layer that is not there."""
    if not stored or stored.get("plan_id") == plan_id:
        return stored, None
    chosen, of = stored.get("best_layer"), f"the stored layer sweep is of version {stored.get('version')}, not {version}"
    if chosen in taps:
        return stored, f"{of}: its layer, {chosen}, is taken; tlfs sweep runs it on this version"
    return None, f"{of}, and chose {chosen}, which this version does not hold: it is left out; tlfs sweep runs it on this version"


def unmeasurable(card: dict) -> str | None:
    """Why the similarity to ImageNet cannot be measured with this backbone version, or None."""
    if card.get("imagenet_classifier") or card.get("parent"):
        return None  # a fine-tuned version: load_classifier says why it has none
    return card.get("imagenet_classifier_missing") or "its card names no ImageNet classifier"


def describe(result: dict) -> str:
    s, m = result["size"], result["similarity"]
    similarity = (f"  similarity to ImageNet: {m['score']:.3f} ({'>=' if m['similar'] else '<'} {m['similar_from']}: "
                  f"{'similar' if m['similar'] else 'different'}); mean top-1 ImageNet probability {m['mean_max_probability']:.3f}"
                  if m["measured"] else f"  similarity to ImageNet: cannot be measured: {m['why']}")
    lines = [
        f"case: {result['case'].replace('_', ', ')}",
        f"  size: median {s['images_per_class']:.0f} training images per class over {s['classes']} classes "
        f"({'>=' if s['large'] else '<'} {s['large_from_per_class']}: {'large' if s['large'] else 'small'})",
        similarity,
    ]
    balance = s.get("balance")
    if balance and balance["imbalanced"]:
        lines.append(f"  classes: imbalanced, {balance['commonest']} {balance['commonest_images']:,} training images to "
                     f"{balance['rarest']} {balance['rarest_images']:,} ({balance['ratio']:.0f}x): heads fitted with "
                     "--balanced find more of the rare classes")
    if result["sweep"]:
        validation = result.get("sweep_validation")
        of = (f" of version {result['sweep_version']}"
              if result.get("sweep_version") not in (None, result.get("version")) else "")
        shown = "validation / test" if validation else "test"  # a sweep saved before it recorded validation: test alone
        lines.append(f"  layer sweep{of} (softmax {shown} accuracy): " + ", ".join(
            (f"{k} {validation[k]:.3f}/{v:.3f}" if validation else f"{k} {v:.3f}") for k, v in result["sweep"].items()))
    from tlfs.pipeline.learning_curve import WORTH_A_DOUBLING

    for curve in result.get("learning_curves") or []:
        first, last, gain = curve["points"][0], curve["points"][-1], curve["last_doubling_gain"]
        measure = curve.get("measure", "accuracy")
        lines.append(f"  learning curve ({curve['head']}{' (balanced)' if measure != 'accuracy' else ''} on "
                     f"{'+'.join(curve['layers'])}): {first['images']:,} -> {last['images']:,} training images, validation "
                     f"{measure.replace('_', ' ')} {first[f'validation_{measure}']:.3f} -> {last[f'validation_{measure}']:.3f}"
                     + (f"; a doubling last added {gain * 100:+.1f} points" if gain is not None else "")
                     + (f": more labels would still help (tlfs label-next --dataset {result['dataset']} chooses which)"
                        if gain is not None and gain >= WORTH_A_DOUBLING else ""))
    a = result["action"]
    detail = f"{a['head']} on {a['layer']}" if a["do"] == "linear_classifier" else f"freeze {a['freeze']}, init {a['init']}"
    lines.append(f"action: {a['do'].replace('_', ' ')} ({detail}) — {a['why']}")
    return "\n".join(lines)


__all__ = ["advise", "describe", "decide", "similarity_from_logits", "sweep_for"]
