"""Export a backbone to ONNX once per version, with a model card, validated on real images.

An artifact lives at ``{models_root}/{version}/model.onnx`` beside ``model_card.json``.
The version is a digest of everything that changes the graph (backbone, weights,
taps, input size, normalization, opset, export format), so a re-export of an
unchanged backbone finds the card and reuses the file. The card is written last: a
folder without a card is an unfinished export and is redone.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlfs.models import sample_images
from tlfs.features.storage import atomic_put_file, atomic_write_json, digest_of, sha256_uri
from tlfs.models.artifact import CARD_NAME, ONNX_NAME, Artifact, read_card
from tlfs.models.classifier import save_classifier
from tlfs.models.backbones import BackboneSpec, LoadedBackbone, get_spec, grid_layer, load_backbone, resolve_weights
from tlfs.models.errors import ModelError
from tlfs.models.names import folder_name
from tlfs.models.variants import PARITY_MIN_COSINE, parity_over, with_variants

if TYPE_CHECKING:
    from tlfs.models.taps import TapNetwork

VERSION_DIGITS = 10  # hex digits of a backbone version's digest (names.BACKBONE_OR_VERSION matches them)
OPSET = 18
EXPORT_FORMAT = 1  # bump when the graph's contract (inputs, outputs, preprocessing) changes


def version_of(spec: BackboneSpec, weights_sha256: str, opset: int = OPSET, lineage: dict | None = None) -> str:
    """A digest of everything that makes the graph, and for a fine-tuned version of where
    it comes from: two fine-tunes that leave the same weights (say, both kept their
    head-only epoch) are still two versions, each with its own card."""
    identity = {
        "backbone": spec.name,
        "weights_sha256": weights_sha256,
        "taps": spec.taps,
        **({"grid_taps": list(spec.grid_taps)} if spec.grid_taps else {}),  # unchanged digests without
        **({"token_taps": list(spec.token_taps), "prefix_tokens": spec.prefix_tokens, "class_token": spec.class_token}
           if spec.token_taps else {}),
        **({"interpolation": spec.interpolation} if spec.interpolation != "bilinear" else {}),
        "input_size": spec.input_size,
        "mean": spec.mean,
        "std": spec.std,
        "opset": opset,
        "export_format": EXPORT_FORMAT,
        **({"lineage": lineage} if lineage else {}),
    }
    return f"{folder_name(spec.name)}-{digest_of(identity, VERSION_DIGITS)}"


def export(
    backbone: str,
    models_root: str,
    weights: str | None = None,
    random_weights: bool = False,
    parent: dict | None = None,
    log=print,
) -> Artifact:
    """Export ``backbone`` under ``models_root`` (any fsspec URI) unless an identical
    version is already there. ``parent`` records lineage for fine-tuned versions."""
    choice = resolve_weights(backbone, weights, random_weights)
    return _export_version(get_spec(backbone), choice.sha256, models_root, parent,
                           lambda: load_backbone(backbone, choice=choice), log)


def export_module(loaded: LoadedBackbone, models_root: str, parent: dict | None = None, log=print) -> Artifact:
    """Export a network held in memory (a fine-tuned one) as its version, unless that
    version is already there."""
    return _export_version(loaded.spec, loaded.weights_sha256, models_root, parent, lambda: loaded, log)


def _export_version(spec: BackboneSpec, weights_sha256: str, models_root: str, parent: dict | None, load, log) -> Artifact:
    lineage = {k: parent.get(k) for k in ("version", "dataset", "run")} if parent else None
    version = version_of(spec, weights_sha256, lineage=lineage)
    uri = f"{models_root.rstrip('/')}/{version}"
    card = read_card(uri)
    if card is not None:
        log(f"reusing {uri} (card present, onnx sha256 {card['onnx_sha256'][:12]}...)")
        if "imagenet_classifier" not in card and not card.get("parent") and spec.classifier:  # exported before classifiers were saved
            card = {**card, "imagenet_classifier": save_classifier(load(), uri)}
            atomic_write_json(f"{uri}/{CARD_NAME}", card)
            log(f"added the ImageNet classifier to {uri}")
        return with_variants(Artifact(uri, card), log)
    return export_loaded(load(), uri, version, parent=parent, log=log)


def export_loaded(loaded: LoadedBackbone, uri: str, version: str, parent: dict | None = None, log=print) -> Artifact:
    from tlfs.models.taps import TapNetwork  # torch: only where a network is exported, not where one is reused

    spec = loaded.spec
    network = TapNetwork(spec, loaded.module).eval()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tlfs-export-") as tmp:
        onnx_path = Path(tmp) / ONNX_NAME
        _torch_export(network, onnx_path)
        _check(onnx_path)
        parity = parity_report(network, onnx_path)
        worst = min(v["cosine_similarity"] for v in parity.values())
        if worst < PARITY_MIN_COSINE:
            raise ModelError(f"ONNX export of {spec.name} disagrees with PyTorch (cosine {worst:.6f}): {parity}")
        card = _card(loaded, version, onnx_path, parity, parent, time.perf_counter() - started)
        # a fine-tuned network's classifier is its dataset's, not ImageNet's
        card["imagenet_classifier"] = None if parent or not spec.classifier else save_classifier(loaded, uri)
        if not parent and not spec.classifier:
            card["imagenet_classifier_missing"] = no_classifier_reason(spec)
        card_path = Path(tmp) / CARD_NAME
        card_path.write_text(json.dumps(card, indent=2))
        atomic_put_file(onnx_path, f"{uri}/{ONNX_NAME}")
        atomic_put_file(card_path, f"{uri}/{CARD_NAME}")  # last: the commit point
    log(f"exported {version} to {uri} in {card['export_seconds']:.1f}s; parity (min cosine) {worst:.7f}")
    return with_variants(Artifact(uri, card), log)


def no_classifier_reason(spec: BackboneSpec) -> str:
    return (f"{spec.name} has no ImageNet classifier (its pretrained weights carry no 1,000-class head: "
            f"a feature extractor such as a CLIP, SigLIP or DINOv2 image tower)")


def _torch_export(network: TapNetwork, path: Path) -> None:
    import torch

    example = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    outputs = network.output_names
    # The TorchScript-based exporter: 10x quicker to export than dynamo here and its
    # graph ran ~10% faster on onnxruntime's CPU provider (measured on lite0).
    with torch.no_grad(), warnings.catch_warnings():
        # the grid's slice bounds are constants by design (the graph resizes to one size)
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python integer")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # timm's shape assertions, constant for the one input size the graph resizes to
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes={"images": {0: "batch", 1: "height", 2: "width"}, **{n: {0: "batch"} for n in outputs}},
        )


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"exported ONNX failed onnx.checker: {exc}") from exc


def parity_report(network: TapNetwork, onnx_path: Path) -> dict[str, dict[str, float]]:
    """ORT vs PyTorch on real photos, at their own size and as a 32x32 batch."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = network.output_names

    def pytorch(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in network(torch.from_numpy(np.ascontiguousarray(batch).copy()))]

    return parity_over(names, ((session.run(names, {"images": b}), pytorch(b)) for b in sample_images.parity_batches()))


def _card(loaded: LoadedBackbone, version: str, onnx_path: Path, parity: dict, parent: dict | None, seconds: float) -> dict:
    import onnx
    import onnxruntime
    import torch
    import torchvision

    spec = loaded.spec
    dims = _output_dims(onnx_path)
    return {
        "version": version,
        "backbone": spec.name,
        "format": EXPORT_FORMAT,
        "inputs": [{"name": "images", "dtype": "uint8", "shape": ["batch", "height", "width", 3], "layout": "NHWC"}],
        "outputs": [{"name": n, "dtype": "float32", "shape": ["batch", dims[n]]} for n in spec.layer_names],
        "layers": {n: dims[n] for n in spec.layer_names},
        "preprocessing": {
            "resize": f"{spec.interpolation} to {spec.input_size}x{spec.input_size} (align_corners=False), in graph",
            "input_size": spec.input_size,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "pooling": "global average over height and width",
            **({"token_pooling": f"<tap>_cls: the class token; <tap>_mean: the mean of the patch tokens, the first "
                                 f"{spec.prefix_tokens} (class and register) tokens left out"} if spec.token_taps else {}),
            **({"grid_pooling": {grid_layer(t): f"2x2 grid of quadrant averages of {t}: top-left, top-right, bottom-left, "
                                                f"bottom-right, {dims[t]} values each" for t in spec.grid_taps}}
               if spec.grid_taps else {}),
        },
        "opset": OPSET,
        "weights": {"source": spec.weights_source, "origin": loaded.weights_origin, "sha256": loaded.weights_sha256},
        "onnx_sha256": sha256_uri(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "parity": parity,
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "parent": parent,
        "export_seconds": round(seconds, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _output_dims(onnx_path: Path) -> dict[str, int]:
    """Each output's width, from a run (a transformer's token pooling leaves it symbolic in the graph)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"images": np.zeros((1, 32, 32, 3), dtype=np.uint8)})
    return {name: int(value.shape[1]) for name, value in zip(names, values)}
