"""The fine-tuning task: train a backbone on a dataset's classes in two phases, with a
checkpoint after every epoch, then export the result as a new backbone version whose
model card names its parent, the dataset and the metrics.

Phase 1 trains only the new classifier (RMSprop, lr 1e-3: the seeds' "train the model
on the new data for a few epochs"); phase 2 unfreezes the backbone after the frozen tap
blocks and trains with SGD, lr 1e-4, momentum 0.9 (the seeds' fine-tuning step). Each
phase stops early when validation accuracy (10% of the training split, stratified)
has not improved for ``patience`` epochs; the best epoch's weights are kept.

A killed run resumes from its last checkpoint (model, optimizer, scheduler, the random
generator and the best weights so far) when started again with the same settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict
from typing import Callable

import numpy as np

from tlfs.features.storage import atomic_write_bytes, atomic_write_json, exists, fs_path
from tlfs.pipeline.config import FinetuneConfig
from tlfs.pipeline.datasets import DatasetIndex, Entry, build_index, iter_payloads
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.images import ImageRejected, decode

CHECKPOINT = "checkpoint.pt"


def load_split(index: DatasetIndex, entries: list[Entry], size: int, cache_dir: str | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Decoded uint8 images of one split (N, H, W, 3) with labels; rejected images are
    listed, not fatal. Mixed sizes are resized to the backbone's input size."""
    from PIL import Image

    images, labels, rejects = [], [], []
    for entry, payload in iter_payloads(index, entries, cache_dir):
        try:
            images.append(decode(payload, size))
            labels.append(index.label_of(entry.label_name))
        except ImageRejected as exc:
            rejects.append({"image_id": entry.image_id, "reason": str(exc)})
    if len({image.shape for image in images}) > 1:
        images = [np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR)) if i.shape[:2] != (size, size) else i
                  for i in images]
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), rejects
    return np.stack(images), np.array(labels, np.int64), rejects


def _read_checkpoint(uri: str):
    import torch

    fs, path = fs_path(uri)
    with fs.open(path, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def _write_torch(uri: str, obj) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(uri, buffer.getvalue())


def run_key(dataset: str, index: DatasetIndex, backbone: str, weights_sha256: str, config: FinetuneConfig, limit: int | None) -> str:
    identity = {
        "dataset": dataset,
        "sources": [s.checksum for s in index.sources],
        "ids": hashlib.sha256("\n".join(e.image_id for e in index.entries).encode("utf-8", "surrogateescape")).hexdigest(),
        "backbone": backbone,
        "weights": weights_sha256,
        "config": asdict(config),
        "limit": limit,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def finetune(
    dataset: str,
    sources: list[str],
    backbone: str,
    model_store: str,
    config: FinetuneConfig = FinetuneConfig(),
    limit: int | None = None,
    device: str = "cpu",
    cache_dir: str | None = None,
    weights: str | None = None,
    restart: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    import torch

    from tlfs.models.backbones import get_spec, load_backbone, resolve_weights
    from tlfs.models.export import version_of
    from tlfs.models.finetune import Classifier, apply_freeze, evaluate, train_epoch
    from tlfs.pipeline.fit import validation_split

    config.check()
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for, but PyTorch sees no CUDA device (no CPU fallback)")
    if device not in ("cpu", "cuda"):
        raise PipelineError(f"--device must be cpu or cuda, not {device!r}")
    started = time.perf_counter()
    spec = get_spec(backbone)
    choice = resolve_weights(backbone, weights, random_weights=config.from_scratch)
    parent_version = version_of(spec, choice.sha256)
    index = build_index(dataset, sources, limit=limit, cache_dir=cache_dir)
    for split in ("train", "test"):
        if split not in index.splits():
            raise PipelineError(f"fine-tuning {dataset} needs a train and a test split; it has {', '.join(index.splits())}")
    key = run_key(dataset, index, backbone, choice.sha256, config, limit)
    work = f"{model_store.rstrip('/')}/_finetune/{dataset}-{backbone}-{key}"
    checkpoint_uri = f"{work}/{CHECKPOINT}"

    log(f"decoding {len(index.entries)} images of {dataset}")
    split_entries = {s: [e for e in index.entries if e.split == s] for s in ("train", "test")}
    train_images, train_labels, rejects = load_split(index, split_entries["train"], spec.input_size, cache_dir)
    test_images, test_labels, test_rejects = load_split(index, split_entries["test"], spec.input_size, cache_dir)
    rejects += test_rejects
    fit_idx, val_idx = validation_split(train_labels, seed=config.seed)
    val_images, val_labels = train_images[val_idx], train_labels[val_idx]
    fit_images, fit_labels = train_images[fit_idx], train_labels[fit_idx]

    torch.manual_seed(config.seed)
    loaded = load_backbone(backbone, choice=choice)
    model = Classifier(loaded, len(index.classes)).to(device)
    amp = device == "cuda"
    if amp:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: the fastest kernels, found once
    # On the training device: the random numbers (shuffles, augmentation) and the images of
    # every split, so that a step never waits on a host copy or a host random draw.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    images_on_device = torch.from_numpy(fit_images).to(device)
    labels_on_device = torch.from_numpy(fit_labels).to(device)
    val_on_device = (torch.from_numpy(val_images).to(device), torch.from_numpy(val_labels).to(device))

    saved = _read_checkpoint(checkpoint_uri) if exists(checkpoint_uri) and not restart else None
    if saved is not None:
        if saved.get("config") != asdict(config):
            raise PipelineError(f"{checkpoint_uri} was written with other settings; use --restart to start over")
        model.load_state_dict(saved["model"])
        generator.set_state(saved["generator"])
        log(f"resuming from {checkpoint_uri}: phase {saved['phase']}, {saved['epoch']} epoch(s) done")
    resumed_from = None if saved is None else {"phase": saved["phase"], "epoch": saved["epoch"]}
    history: list = list(saved["history"]) if saved else []
    best = saved["best"] if saved else {"validation_accuracy": -1.0, "model": None, "phase": None, "epoch": 0}
    phases_done: list = list(saved["phases_done"]) if saved else []

    def checkpoint(phase: str, epoch: int, stale: int, optimizer, scheduler) -> None:
        _write_torch(checkpoint_uri, {
            "config": asdict(config), "phase": phase, "epoch": epoch, "stale": stale, "phases_done": phases_done,
            "model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {}, "generator": generator.get_state(),
            "best": best, "history": history,
        })

    phases = [("body", config.epochs)] if config.from_scratch else [("head", config.head_epochs), ("body", config.epochs)]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    from tqdm import tqdm

    for phase, epochs in phases:
        if phase in phases_done:
            continue
        if phase == "head":
            apply_freeze(model, "all")
            params = list(model.classifier.parameters())
            optimizer = torch.optim.RMSprop(params, lr=config.head_lr, weight_decay=config.weight_decay)
        else:
            frozen = apply_freeze(model, "none" if config.from_scratch else config.freeze)
            if frozen:
                log(f"phase 2: {len(frozen)} backbone parameter tensors frozen ({config.freeze} tap block(s))")
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        steps = max(1, epochs * -(-len(fit_images) // config.batch_size))
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if config.schedule == "cosine"
                     else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
        start_epoch, stale = 0, 0
        if saved and saved["phase"] == phase:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            start_epoch, stale = saved["epoch"], saved["stale"]
        for epoch in range(start_epoch, epochs):
            if stale >= config.patience:
                break
            epoch_started = time.perf_counter()
            batches = tqdm(torch.randperm(len(fit_images), generator=generator, device=device).split(config.batch_size),
                           desc=f"{phase} epoch {epoch + 1}/{epochs}", disable=not show_progress, leave=False)
            mean_loss = train_epoch(model, optimizer, scheduler, loss_fn, images_on_device, labels_on_device, batches,
                                    generator, amp)
            val_accuracy = evaluate(model, *val_on_device, config.batch_size * 2, amp)
            record = {"phase": phase, "epoch": epoch + 1, "loss": round(mean_loss, 5),
                      "validation_accuracy": round(val_accuracy, 5), "seconds": round(time.perf_counter() - epoch_started, 2)}
            history.append(record)
            log(f"{phase} epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, validation accuracy {val_accuracy:.4f} "
                f"({record['seconds']:.1f}s)")
            if val_accuracy > best["validation_accuracy"]:
                best = {"validation_accuracy": val_accuracy, "phase": phase, "epoch": epoch + 1,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                stale = 0
            else:
                stale += 1
            checkpoint(phase, epoch + 1, stale, optimizer, scheduler)
        phases_done.append(phase)
        checkpoint(phase, epochs, 0, None, None)

    if best["model"] is not None:
        model.load_state_dict(best["model"])
    test_accuracy = evaluate(model, torch.from_numpy(test_images).to(device), torch.from_numpy(test_labels).to(device),
                             config.batch_size * 2, amp)
    seconds = round(time.perf_counter() - started, 1)
    log(f"best: {best['phase']} epoch {best['epoch']}, validation accuracy {best['validation_accuracy']:.4f}; "
        f"test accuracy {test_accuracy:.4f}")
    metrics = {"test_accuracy": round(test_accuracy, 5), "validation_accuracy": round(best["validation_accuracy"], 5),
               "best_phase": best["phase"], "best_epoch": best["epoch"], "n_train": len(fit_images),
               "n_validation": len(val_images), "n_test": len(test_images), "rejected": len(rejects), "seconds": seconds}
    artifact = _export(model, loaded, backbone, model_store, work, cache_dir, key, parent={
        "version": parent_version, "run": key, "weights": choice.origin, "dataset": dataset, "classes": index.classes,
        "sources": [{"uri": s.uri, "checksum": s.checksum} for s in index.sources], "limit": limit,
        "finetune": asdict(config), "device": device, "metrics": metrics,
    }, log=log)
    summary = {"dataset": dataset, "backbone": backbone, "parent_version": parent_version,
               "backbone_version": artifact.version, "model_uri": artifact.uri, **metrics,
               "resumed_from": resumed_from, "work_uri": work, "history": history}
    atomic_write_json(f"{work}/metrics.json", summary)
    return summary


def _export(model, loaded, backbone: str, model_store: str, work: str, cache_dir: str | None, key: str, parent: dict, log):
    """The fine-tuned backbone as a weights file (kept beside the checkpoint), exported
    to ONNX as a new version; the new classifier is saved beside it."""
    import tempfile
    from pathlib import Path

    import torch

    from tlfs.models.export import export
    from tlfs.models.finetune import backbone_state

    folder = Path(cache_dir or tempfile.gettempdir()) / "finetune" / key
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "backbone.pt"
    torch.save(backbone_state(model, loaded), weights)
    atomic_write_bytes(f"{work}/backbone.pt", weights.read_bytes())
    _write_torch(f"{work}/classifier.pt", {k: v.cpu() for k, v in model.classifier.state_dict().items()})
    return export(backbone, model_store, weights=str(weights), parent=parent, log=log)
