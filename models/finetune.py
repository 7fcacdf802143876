"""Fine-tuning a backbone on a dataset's classes (the seeds' recipe for large datasets).

The network is the backbone up to its classifier input, globally average-pooled, and a
new linear classifier for the dataset's classes (the pretrained ImageNet classifier is
kept unchanged in the backbone, so the fine-tuned weights still load into the registry's
network and export like any backbone). Training takes uint8 NHWC batches, as the ONNX
graph does: augmentation (random shift, zoom and horizontal flip in one ``grid_sample``),
resizing and normalisation all run on the training device.

Freezing: ``freeze=N`` freezes every parameter up to and including the N-th tap block
(shallow to deep; their BatchNorm statistics stay fixed too), ``"all"`` the whole
backbone, ``"none"`` nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlfs.models.backbones import BackboneSpec, LoadedBackbone
from tlfs.models.errors import ModelError
from tlfs.models.taps import POOLINGS


@dataclass(frozen=True)
class Augment:
    shift: float = 0.125  # of the image side, each way
    zoom: tuple[float, float] = (1.0, 1.15)
    flip: bool = True


class Classifier(nn.Module):
    """Backbone features at the classifier input, pooled as the stored layer is, -> a new
    linear. The classifier input is the layer the ImageNet classifier reads, or, for a
    backbone without one, its deepest layer."""

    def __init__(self, loaded: LoadedBackbone, classes: int) -> None:
        super().__init__()
        spec = loaded.spec
        self.spec = spec
        self.tap, self.pooling = classifier_tap(spec)
        self.features = spec.extract(loaded.module, [self.tap])
        # parameters of the extractor are named as the backbone's, after this prefix
        self.param_prefix = getattr(self.features, "param_prefix", "")
        with torch.no_grad():
            dim = self._pool(self.features(torch.zeros(1, 3, spec.input_size, spec.input_size))).shape[1]
        self.classifier = nn.Linear(dim, classes)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def _pool(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return POOLINGS[self.pooling](out[self.tap], self.spec.prefix_tokens)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC (any size) -> float NCHW at the backbone's input size, normalised."""
        x = images.permute(0, 3, 1, 2).float()
        size = self.spec.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode=self.spec.interpolation, align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._pool(self.features(x)))


def classifier_layer(spec: BackboneSpec) -> str:
    """The stored layer a fine-tuned classifier reads: the ImageNet classifier's, else the deepest."""
    return spec.classifier_input or spec.layer_names[-1]


def classifier_tap(spec: BackboneSpec) -> tuple[str, str]:
    """(tap, pooling) of :func:`classifier_layer`."""
    layer = classifier_layer(spec)
    for name, tap, pooling in spec.outputs():
        if name == layer:
            return tap, pooling
    raise ModelError(f"{spec.name} stores no layer {layer!r} to fine-tune a classifier on")


def augment(images: torch.Tensor, size: int, generator: torch.Generator, setting: Augment = Augment()) -> torch.Tensor:
    """Random shift, zoom and flip of a uint8 NHWC batch, resampled straight to
    ``size`` x ``size`` (float NCHW, 0..255) with reflection at the borders."""
    n = images.shape[0]
    device = images.device
    x = images.permute(0, 3, 1, 2).float()
    rand = torch.rand(n, 4, generator=generator, device=generator.device).to(device)
    scale = 1.0 / (setting.zoom[0] + (setting.zoom[1] - setting.zoom[0]) * rand[:, 0])
    sign = torch.where(rand[:, 1] < 0.5, -1.0, 1.0) if setting.flip else torch.ones(n, device=device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = scale * sign
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = (rand[:, 2] * 2 - 1) * 2 * setting.shift
    theta[:, 1, 2] = (rand[:, 3] * 2 - 1) * 2 * setting.shift
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def frozen_prefixes(spec: BackboneSpec, freeze: str | int) -> int:
    """How many tap blocks ``freeze`` names: an int, "all" or "none"."""
    taps = len(spec.taps)
    if freeze in ("none", 0, "0"):
        return 0
    if freeze == "all":
        return taps
    try:
        count = int(freeze)
    except (TypeError, ValueError):
        raise ModelError(f"--freeze takes a number of tap blocks (0..{taps}), 'all' or 'none'; got {freeze!r}") from None
    if not 0 <= count <= taps:
        raise ModelError(f"{spec.name} has {taps} tap blocks ({', '.join(spec.taps)}); cannot freeze {count}")
    return count


def apply_freeze(model: Classifier, freeze: str | int) -> list[str]:
    """Freeze the backbone's parameters up to the chosen tap block; returns the frozen
    parameter names. Parameters are registered shallow to deep in every backbone."""
    count = frozen_prefixes(model.spec, freeze)
    names = [name for name, _ in model.features.named_parameters()]
    if count == 0:
        last = -1
    elif count == len(model.spec.taps):
        last = len(names) - 1
    else:
        node = list(model.spec.taps.values())[count - 1]
        inside = [i for i, name in enumerate(names) if name.startswith(f"{model.param_prefix}{node}.")]
        last = max(inside) if inside else -1
    frozen = set(names[: last + 1])
    for name, parameter in model.features.named_parameters():
        parameter.requires_grad_(name not in frozen)
    return sorted(frozen)


def set_train_mode(model: Classifier) -> None:
    """Train mode, except BatchNorm layers whose parameters are frozen: their running
    statistics stay the pretrained ones."""
    model.train()
    for module in model.features.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def backbone_state(model: Classifier, loaded: LoadedBackbone) -> dict[str, torch.Tensor]:
    """The fine-tuned weights in the backbone's own state-dict layout (loads strictly
    into the registry's network; the ImageNet classifier is unchanged)."""
    tuned = {key.removeprefix(model.param_prefix): value for key, value in model.features.state_dict().items()}
    state = {}
    for key, value in loaded.module.state_dict().items():
        state[key] = tuned.get(key, value).detach().cpu().clone()
    return state


@dataclass(frozen=True)
class Labelled:
    """uint8 NHWC images and their labels (class indices), both on the model's device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def on(cls, device: str, images, labels) -> "Labelled":
        """From host arrays (numpy), copied to ``device``."""
        return cls(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Step:
    """How a training step learns: its optimizer, learning-rate schedule (stepped once per
    batch) and loss."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: nn.Module


@dataclass(frozen=True)
class TrainedEpoch:
    """An epoch's mean loss, and the seconds of its first and its last step: on CUDA the
    first step of each new batch shape includes cuDNN's search for its kernels
    (``cudnn.benchmark``), so they tell that one-off cost from the steady steps."""

    mean_loss: float
    first_step_seconds: float
    last_step_seconds: float


def train_epoch(model: Classifier, step: Step, data: Labelled, batches, generator: torch.Generator,
                amp: bool) -> TrainedEpoch:
    """One pass over ``batches`` (a sized sequence of index tensors) of the device-resident
    ``data``. The loss stays on the device until the end; the device is waited on only
    around the first and the last step, to time them."""
    images, labels = data.images, data.labels
    optimizer, scheduler, loss_fn = step.optimizer, step.scheduler, step.loss_fn
    set_train_mode(model)
    size = model.spec.input_size
    total = torch.zeros((), device=images.device)
    seen = 0
    last = len(batches) - 1
    timed = {0: 0.0, last: 0.0}  # the step numbers timed, and their seconds
    for number, batch in enumerate(batches):
        if number in timed:
            _wait_for(images.device)
            started = time.perf_counter()
        batch = batch.to(images.device)
        x = (augment(images[batch], size, generator) - model.mean) / model.std
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach().float() * len(batch)
        seen += len(batch)
        if number in timed:
            _wait_for(images.device)
            timed[number] = time.perf_counter() - started
    return TrainedEpoch(float(total) / max(1, seen), round(timed[0], 3), round(timed[last], 3))


def _wait_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: Classifier, data: Labelled, batch_size: int, amp: bool) -> float:
    """Accuracy on ``data`` (on the model's device); the count stays there until the
    end: one sync per evaluation, not one per batch."""
    images, labels = data.images, data.labels
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
        for start in range(0, len(images), batch_size):
            x = model.normalise(images[start : start + batch_size])
            if images.is_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += (model(x).argmax(1) == labels[start : start + batch_size]).sum()
    return int(correct) / max(1, len(images))
