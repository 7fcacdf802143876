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
* if a layer sweep is stored, its per-layer accuracies pick the layer.

Thresholds are overridable (``--large-per-class``, ``--similar-score``).
"""

from __future__ import annotations

import tempfile
from collections import Counter
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


def decide(per_class: float, similarity: float, large_per_class: int, similar_score: float, sweep: dict | None, last_layer: str, layers: list[str]) -> tuple[str, dict]:
    large = per_class >= large_per_class
    similar = similarity >= similar_score
    case = f"{'large' if large else 'small'}_{'similar' if similar else 'different'}"
    best = max(sweep["layers"], key=sweep["layers"].get) if sweep else None
    if case == "small_similar":
        layer = best or last_layer
        action = {"do": "linear_classifier", "head": "softmax", "layer": layer,
                  "why": "few images, ImageNet-like: a linear classifier on late features; fine-tuning would overfit"}
    elif case == "small_different":
        layer = best or layers[len(layers) // 2]
        action = {"do": "linear_classifier", "head": "softmax", "layer": layer,
                  "why": "few images, unlike ImageNet: a classifier on an earlier, more generic layer"}
    elif case == "large_similar":
        action = {"do": "fine_tune", "freeze": "none", "init": "pretrained",
                  "why": "many images, ImageNet-like: fine-tune the whole network from the pretrained weights"}
    else:
        action = {"do": "fine_tune", "freeze": "none", "init": "pretrained",
                  "why": "many images, unlike ImageNet: fine-tune everything from pretrained init (or train from scratch)"}
    return case, action


def advise(
    dataset: str,
    sources: list[str],
    backbone: str,
    store: str,
    models: str,
    limit: int | None = None,
    large_per_class: int = LARGE_IMAGES_PER_CLASS,
    similar_score: float = SIMILAR_SCORE,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    import torch

    from tlfs import features
    from tlfs.features import layout
    from tlfs.models.backbones import get_spec, imagenet_classifier, load_backbone
    from tlfs.pipeline import extract
    from tlfs.pipeline.datasets import build_index

    spec = get_spec(backbone)
    index = build_index(dataset, sources, limit=limit, cache_dir=cache_dir)
    train_split = "train" if "train" in index.splits() else index.splits()[0]
    counts = Counter(e.label_name for e in index.entries if e.split == train_split)
    per_class = float(np.median(list(counts.values())))
    log(f"{dataset}: {sum(counts.values())} {train_split} images in {len(counts)} classes (median {per_class:.0f} per class)")

    # Similarity on a class-balanced sample of the training split, head layer only.
    with tempfile.TemporaryDirectory(prefix="tlfs-advise-") as tmp:
        sample_size = min(SIMILARITY_SAMPLE, limit or SIMILARITY_SAMPLE)
        summary = extract.run(dataset, sources, backbone, tmp, models, layers=[spec.classifier_input], splits=[train_split],
                              limit=sample_size, cache_dir=cache_dir, show_progress=False, log=lambda *_: None)
        X, _, _ = features.load_matrix(dataset, summary["backbone_version"], spec.classifier_input, train_split, tmp)
    weight, bias = imagenet_classifier(load_backbone(backbone))
    with torch.no_grad():
        logits = (torch.from_numpy(X) @ weight.T + bias).numpy()
    similarity = similarity_from_logits(logits)
    log(f"similarity to ImageNet: {similarity['score']:.3f} (mean top-1 probability {similarity['mean_max_probability']:.3f}, "
        f"{similarity['images']} images)")

    sweep = None
    try:
        set_uri, _ = features.find_set(dataset, backbone, store)
        fs_uri = f"{layout.heads_uri(set_uri)}/sweep.json"
        from tlfs.features.storage import exists, read_json

        if exists(fs_uri):
            sweep = read_json(fs_uri)
    except features.NotCommitted:
        pass
    case, action = decide(per_class, similarity["score"], large_per_class, similar_score, sweep,
                          spec.tap_names[-1], spec.tap_names)
    return {
        "dataset": dataset,
        "backbone": backbone,
        "case": case,
        "size": {"images_per_class": per_class, "train_images": int(sum(counts.values())), "classes": len(counts),
                 "large_from_per_class": large_per_class, "large": per_class >= large_per_class},
        "similarity": {**similarity, "similar_from": similar_score, "similar": similarity["score"] >= similar_score},
        "sweep": sweep["layers"] if sweep else None,
        "action": action,
    }


def describe(result: dict) -> str:
    s, m = result["size"], result["similarity"]
    lines = [
        f"case: {result['case'].replace('_', ', ')}",
        f"  size: median {s['images_per_class']:.0f} training images per class over {s['classes']} classes "
        f"({'>=' if s['large'] else '<'} {s['large_from_per_class']}: {'large' if s['large'] else 'small'})",
        f"  similarity to ImageNet: {m['score']:.3f} ({'>=' if m['similar'] else '<'} {m['similar_from']}: "
        f"{'similar' if m['similar'] else 'different'}); mean top-1 ImageNet probability {m['mean_max_probability']:.3f}",
    ]
    if result["sweep"]:
        lines.append("  layer sweep (softmax test accuracy): " + ", ".join(f"{k} {v:.3f}" for k, v in result["sweep"].items()))
    a = result["action"]
    detail = f"{a['head']} on {a['layer']}" if a["do"] == "linear_classifier" else f"freeze {a['freeze']}, init {a['init']}"
    lines.append(f"action: {a['do'].replace('_', ' ')} ({detail}) — {a['why']}")
    return "\n".join(lines)


__all__ = ["advise", "describe", "decide", "similarity_from_logits"]
