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

import io
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from tlfs.features.storage import atomic_write_bytes, atomic_write_json, digest_of, exists, fs_path
from tlfs.pipeline.config import FinetuneConfig
from tlfs.pipeline.dataset_index import DatasetIndex, Entry, Reject
from tlfs.pipeline.decode_pool import Decoder
from tlfs.pipeline.image_decode import FULL_DEPTH, check_bit_depth, decode_rule, pixels_rule
from tlfs.pipeline.indexing import build_index, left_out_notice, refused_notice, rejects_named, repeated_rows_notice
from tlfs.pipeline.errors import CannotFit, PipelineError
from tlfs.pipeline.holdout import HOLDOUT_HINT
from tlfs.pipeline.first_images import first_images_notices

CHECKPOINT = "checkpoint.pt"


def load_split(index: DatasetIndex, entries: list[Entry], size: int, decoder: Decoder,
               cache_dir: str | None, bit_depth: int = FULL_DEPTH) -> tuple[np.ndarray, np.ndarray, list[Reject]]:
    """Decoded uint8 images of one split (N, H, W, 3) with labels, by the extraction's
    decoder pool; rejected images are listed, not fatal. Mixed sizes are resized to the
    backbone's input size."""
    from PIL import Image

    images, labels, rejects = [], [], []
    for _, entry, image, reason in decoder.decoded(index.sources, entries, size, cache_dir, bit_depth):
        if image is None:
            rejects.append(Reject(entry.image_id, index.sources[entry.source].uri, reason))
            continue
        images.append(image)
        labels.append(index.label_of(entry.label_name))
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


RUN_KEY_DIGITS = 12  # hex digits of a fine-tuning run's key (its checkpoint folder's name)


@dataclass(frozen=True)
class FinetuneRequest:
    """What to fine-tune, as a user says it (CLI flags, DAG Params, Python): ``backbone``
    (its ``weights``: by default its known source) trained on the classes of ``dataset``
    read from ``sources`` (``limit``: a class-balanced sample per split) on ``device``,
    the result exported under ``model_store``."""

    dataset: str
    sources: tuple[str, ...]
    backbone: str
    model_store: str
    config: FinetuneConfig = field(default_factory=FinetuneConfig)
    limit: int | None = None
    device: str = "cpu"
    cache_dir: str | None = None
    weights: str | None = None
    bit_depth: int = FULL_DEPTH  # the bits greyscale 16-bit samples hold (pipeline/image_decode.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))  # frozen: set once, here
        check_bit_depth(self.bit_depth)


def run_key(request: FinetuneRequest, index: DatasetIndex, weights_sha256: str) -> str:
    """The run's key: its checkpoint folder, the same for the same images, weights and settings."""
    identity = {
        "dataset": request.dataset,
        **index.identity(),
        "backbone": request.backbone,
        "weights": weights_sha256,
        "config": asdict(request.config),
        "limit": request.limit,
        "decode": pixels_rule(request.bit_depth),  # a checkpoint trained on images decoded otherwise is not resumed
    }
    return digest_of(identity, RUN_KEY_DIGITS)


@dataclass
class Splits:
    """The decoded images of a run, held in memory: training (fit), validation (10% of
    the training split, stratified) and test, with the images rejected while decoding."""

    fit: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    rejects: list[Reject]


@dataclass
class Progress:
    """What a checkpoint holds besides the weights: where the run is and its best epoch."""

    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"validation_accuracy": -1.0, "model": None, "phase": None, "epoch": 0})
    phases_done: list = field(default_factory=list)
    saved: dict | None = None  # the checkpoint this run resumed from


def finetune(request: FinetuneRequest, restart: bool = False, show_progress: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Fine-tune the request's backbone on its dataset's classes and export it as a new
    version: check the request, decode the splits, build the network on the device,
    resume from a checkpoint if one is there (``restart``: start afresh), train each
    phase, test the best epoch, export."""
    import torch

    from tlfs.models.backbones import get_spec, load_backbone, resolve_weights
    from tlfs.models.export import version_of
    from tlfs.models.finetune import Classifier, Labelled, evaluate
    from tlfs.models.names import folder_name

    _check_request(request.config, request.device)
    dataset, backbone, model_store, config = request.dataset, request.backbone, request.model_store, request.config
    limit, device, cache_dir = request.limit, request.device, request.cache_dir
    started = time.perf_counter()
    spec = get_spec(backbone)
    choice = resolve_weights(backbone, request.weights, random_weights=config.from_scratch)
    parent_version = version_of(spec, choice.sha256)
    index = build_index(dataset, list(request.sources), limit=limit, cache_dir=cache_dir)
    for split in ("train", "test"):
        if split not in index.splits():
            raise CannotFit(f"fine-tuning {dataset} needs a train and a test split; it has {', '.join(index.splits())} "
                            f"({HOLDOUT_HINT})")
    key = run_key(request, index, choice.sha256)
    work = f"{model_store.rstrip('/')}/_finetune/{dataset}-{folder_name(backbone)}-{key}"
    checkpoint_uri = f"{work}/{CHECKPOINT}"

    log(f"decoding {len(index.entries)} images of {dataset}{left_out_notice(index)}{refused_notice(index)}"
        f"{repeated_rows_notice(index)}")
    for notice in first_images_notices(index, request.bit_depth, cache_dir):
        log(notice)
    splits = decode_splits(index, spec.input_size, cache_dir, config.seed, device=device, bit_depth=request.bit_depth)
    if splits.rejects:
        log(f"{len(splits.rejects)} of {len(index.entries)} images rejected while decoding, left out of fine-tuning: "
            f"{rejects_named(splits.rejects)}")

    torch.manual_seed(config.seed)
    loaded = load_backbone(backbone, choice=choice)
    model = Classifier(loaded, len(index.classes)).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: the fastest kernels, found once
    # On the training device: the random numbers (shuffles, augmentation) and the images of
    # every split, so that a step never waits on a host copy or a host random draw.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    progress = _resume(checkpoint_uri, restart, config, model, generator, log)

    trainer = _Trainer(model, generator, config, device, splits, checkpoint_uri, progress, show_progress, log)
    phases = [("body", config.epochs)] if config.from_scratch else [("head", config.head_epochs), ("body", config.epochs)]
    for phase, epochs in phases:
        if phase not in progress.phases_done:
            trainer.train_phase(phase, epochs)

    best = progress.best
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    test_accuracy = evaluate(model, Labelled.on(device, *splits.test), config.batch_size * 2, device == "cuda")
    log(f"best: {best['phase']} epoch {best['epoch']}, validation accuracy {best['validation_accuracy']:.4f}; "
        f"test accuracy {test_accuracy:.4f}")
    metrics = {"test_accuracy": round(test_accuracy, 5), "validation_accuracy": round(best["validation_accuracy"], 5),
               "best_phase": best["phase"], "best_epoch": best["epoch"], "n_train": len(splits.fit[1]),
               "n_validation": len(splits.validation[1]), "n_test": len(splits.test[1]), "rejected": len(splits.rejects),
               "seconds": round(time.perf_counter() - started, 1)}
    artifact = _export(model, loaded, model_store, work, parent={
        "version": parent_version, "run": key, "weights": choice.origin, "dataset": dataset, "classes": index.classes,
        "sources": [{"uri": s.uri, "checksum": s.checksum} for s in index.sources], "limit": limit,
        "finetune": asdict(config), "decode": decode_rule(request.bit_depth), "device": device, "metrics": metrics,
    }, log=log)
    saved = progress.saved
    summary = {"dataset": dataset, "backbone": backbone, "parent_version": parent_version,
               "backbone_version": artifact.version, "model_uri": artifact.uri, **metrics,
               "resumed_from": None if saved is None else {"phase": saved["phase"], "epoch": saved["epoch"]},
               "work_uri": work, "history": progress.history}
    atomic_write_json(f"{work}/metrics.json", summary)
    return summary


def _check_request(config: FinetuneConfig, device: str) -> None:
    import torch

    config.check()
    if device not in ("cpu", "cuda"):
        raise PipelineError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for, but PyTorch sees no CUDA device (no CPU fallback)")


def decode_splits(index: DatasetIndex, size: int, cache_dir: str | None, seed: int, decode_workers: int = 0,
                  device: str = "cpu", bit_depth: int = FULL_DEPTH) -> Splits:
    from tlfs.pipeline.fit import validation_split

    entries = {s: [e for e in index.entries if e.split == s] for s in ("train", "test")}
    with Decoder(decode_workers, device) as decoder:
        train_images, train_labels, rejects = load_split(index, entries["train"], size, decoder, cache_dir, bit_depth)
        test_images, test_labels, test_rejects = load_split(index, entries["test"], size, decoder, cache_dir, bit_depth)
    for split, labels, refused in (("train", train_labels, rejects), ("test", test_labels, test_rejects)):
        if not len(labels):
            shown = "; ".join(f"{r.image_id}: {r.reason}" for r in refused[:3])
            raise CannotFit(f"the {split} split of {index.name} holds no image to fine-tune on: all "
                                f"{len(entries[split])} were rejected" + (f": {shown}" if shown else ""))
    fit_idx, val_idx = validation_split(train_labels, seed=seed)
    return Splits((train_images[fit_idx], train_labels[fit_idx]), (train_images[val_idx], train_labels[val_idx]),
                  (test_images, test_labels), rejects + test_rejects)


def _resume(checkpoint_uri: str, restart: bool, config: FinetuneConfig, model, generator, log) -> Progress:
    """The checkpoint's progress, its weights and random state loaded; a fresh start
    where there is none (or ``restart``)."""
    saved = _read_checkpoint(checkpoint_uri) if exists(checkpoint_uri) and not restart else None
    if saved is None:
        return Progress()
    if saved.get("config") != asdict(config):
        raise PipelineError(f"{checkpoint_uri} was written with other settings; use --restart to start over")
    model.load_state_dict(saved["model"])
    generator.set_state(saved["generator"])
    log(f"resuming from {checkpoint_uri}: phase {saved['phase']}, {saved['epoch']} epoch(s) done")
    return Progress(list(saved["history"]), saved["best"], list(saved["phases_done"]), saved)


@dataclass
class _Trainer:
    """Trains the phases of one run on device-resident images, a checkpoint after every
    epoch; each phase stops early after ``patience`` epochs without a better validation
    accuracy."""

    model: object  # models/finetune.Classifier, on the device
    generator: object  # torch.Generator on the device: shuffles and augmentation
    config: FinetuneConfig
    device: str
    splits: Splits  # copied to the device here
    checkpoint_uri: str
    progress: Progress
    show_progress: bool
    log: Callable[[str], None]

    def __post_init__(self) -> None:
        import torch

        from tlfs.models.finetune import Labelled

        self.fit = Labelled.on(self.device, *self.splits.fit)
        self.validation = Labelled.on(self.device, *self.splits.validation)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)

    def _optimizer(self, phase: str):
        import torch

        from tlfs.models.finetune import apply_freeze

        c = self.config
        if phase == "head":
            apply_freeze(self.model, "all")
            return torch.optim.RMSprop(list(self.model.classifier.parameters()), lr=c.head_lr, weight_decay=c.weight_decay)
        frozen = apply_freeze(self.model, "none" if c.from_scratch else c.freeze)
        if frozen:
            self.log(f"phase 2: {len(frozen)} backbone parameter tensors frozen ({c.freeze} tap block(s))")
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _checkpoint(self, phase: str, epoch: int, stale: int, optimizer, scheduler) -> None:
        p = self.progress
        _write_torch(self.checkpoint_uri, {
            "config": asdict(self.config), "phase": phase, "epoch": epoch, "stale": stale, "phases_done": p.phases_done,
            "model": self.model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {}, "generator": self.generator.get_state(),
            "best": p.best, "history": p.history,
        })

    def train_phase(self, phase: str, epochs: int) -> None:
        import torch
        from tqdm import tqdm

        from tlfs.models.finetune import Step, evaluate, train_epoch

        c, p, amp = self.config, self.progress, self.device == "cuda"
        optimizer = self._optimizer(phase)
        steps = max(1, epochs * -(-len(self.fit) // c.batch_size))
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if c.schedule == "cosine"
                     else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
        start_epoch, stale = 0, 0
        if p.saved and p.saved["phase"] == phase:
            optimizer.load_state_dict(p.saved["optimizer"])
            scheduler.load_state_dict(p.saved["scheduler"])
            start_epoch, stale = p.saved["epoch"], p.saved["stale"]
        for epoch in range(start_epoch, epochs):
            if stale >= c.patience:
                break
            epoch_started = time.perf_counter()
            order = torch.randperm(len(self.fit), generator=self.generator, device=self.device)
            batches = tqdm(order.split(c.batch_size), desc=f"{phase} epoch {epoch + 1}/{epochs}",
                           disable=not self.show_progress, leave=False)
            trained = train_epoch(self.model, Step(optimizer, scheduler, self.loss_fn), self.fit, batches, self.generator, amp)
            validating = time.perf_counter()
            val_accuracy = evaluate(self.model, self.validation, c.batch_size * 2, amp)
            record = {"phase": phase, "epoch": epoch + 1, "loss": round(trained.mean_loss, 5),
                      "validation_accuracy": round(val_accuracy, 5), "seconds": round(time.perf_counter() - epoch_started, 2),
                      "first_step_seconds": trained.first_step_seconds, "last_step_seconds": trained.last_step_seconds,
                      "validation_seconds": round(time.perf_counter() - validating, 2)}
            p.history.append(record)
            self.log(f"{phase} epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, validation accuracy "
                     f"{val_accuracy:.4f} ({record['seconds']:.1f}s: first step {trained.first_step_seconds:.2f}s, "
                     f"last {trained.last_step_seconds:.2f}s, validation {record['validation_seconds']:.1f}s)")
            if val_accuracy > p.best["validation_accuracy"]:
                p.best = {"validation_accuracy": val_accuracy, "phase": phase, "epoch": epoch + 1,
                          "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
                stale = 0
            else:
                stale += 1
            self._checkpoint(phase, epoch + 1, stale, optimizer, scheduler)
        p.phases_done.append(phase)
        self._checkpoint(phase, epochs, 0, None, None)


def _export(model, loaded, model_store: str, work: str, parent: dict, log):
    """The fine-tuned network, exported to ONNX from memory as a new version; its weights
    (in the backbone's own state-dict layout) and the new classifier are kept beside the
    checkpoint."""
    import torch

    from tlfs.features.storage import sha256_bytes
    from tlfs.models.backbones import LoadedBackbone
    from tlfs.models.export import export_module
    from tlfs.models.finetune import backbone_state

    state = backbone_state(model, loaded)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights_uri = f"{work}/backbone.pt"
    atomic_write_bytes(weights_uri, buffer.getvalue())
    _write_torch(f"{work}/classifier.pt", {k: v.cpu() for k, v in model.classifier.state_dict().items()})
    network = loaded.module.to("cpu", memory_format=torch.contiguous_format)
    network.load_state_dict(state)
    tuned = LoadedBackbone(loaded.spec, network.eval(), weights_sha256=sha256_bytes(buffer.getvalue()),
                           weights_origin=weights_uri)
    return export_module(tuned, model_store, parent=parent, log=log)
