"""The exported network: uint8 NHWC images in, one pooled vector per layer out: each
tap's global average, and for a grid variant's taps also their 2x2 grid of quadrant
averages (``<tap>_2x2``: top-left, top-right, bottom-left, bottom-right, each a vector
of the tap's channels, one after another; on odd sizes the quadrants share the middle
row and column, as torch's adaptive pooling to 2x2 does).

Resizing to the backbone's input size and normalization happen inside the graph, so
clients send raw decoded pixels (small for CIFAR's 32x32) and never re-implement the
preprocessing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tlfs.models.backbones import BackboneSpec


class TapNetwork(nn.Module):
    def __init__(self, spec: BackboneSpec, backbone: nn.Module, taps: list[str] | None = None):
        super().__init__()
        self.tap_names = taps or spec.tap_names
        self.outputs = spec.outputs(self.tap_names)  # (layer, tap, pooling), in the order forward returns them
        self.output_names = [layer for layer, _, _ in self.outputs]
        self.prefix_tokens = spec.prefix_tokens
        self.extractor = spec.extract(backbone, self.tap_names)
        self.interpolation = spec.interpolation
        self.size = (spec.input_size, spec.input_size)
        std = torch.tensor(spec.std).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        # the network's own precision: a .half() copy (the fp16 bench row) computes in fp16
        x = images.permute(0, 3, 1, 2).to(self.scale.dtype)
        x = F.interpolate(x, size=self.size, mode=self.interpolation, align_corners=False)
        return x * self.scale + self.shift

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.extractor(self.preprocess(images))
        return tuple(POOLINGS[pooling](out[tap], self.prefix_tokens) for _, tap, pooling in self.outputs)


def pool(activation: torch.Tensor) -> torch.Tensor:
    """Global average pool of a feature map; vectors (e.g. VGG's fc7) pass through."""
    return activation.mean(dim=(2, 3)) if activation.dim() == 4 else activation


def grid(activation: torch.Tensor) -> torch.Tensor:
    """The 2x2 grid of quadrant averages, ``[batch, 4 * channels]``. Static slices (the
    map's size is fixed once the graph resizes its input), since the ONNX exporter takes
    adaptive pooling only where 2 divides the size."""
    if activation.dim() != 4:
        raise ValueError(f"a 2x2 grid needs a spatial map, not a tensor of shape {tuple(activation.shape)}")
    height, width = int(activation.shape[2]), int(activation.shape[3])
    rows, cols = (height + 1) // 2, (width + 1) // 2
    return torch.cat([activation[:, :, top:top + rows, left:left + cols].mean(dim=(2, 3))
                      for top in (0, height - rows) for left in (0, width - cols)], dim=1)


def class_token(tokens: torch.Tensor) -> torch.Tensor:
    """A vision transformer's ``[batch, tokens, width]`` -> its class token (the first)."""
    return tokens[:, 0]


def patch_mean(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """The mean of the patch tokens, the ``prefix`` class and register tokens left out."""
    return tokens[:, prefix:].mean(dim=1)


# pooling name -> (activation, prefix tokens) -> [batch, values]
POOLINGS = {
    "avg": lambda a, prefix: pool(a),
    "grid": lambda a, prefix: grid(a),
    "cls": lambda a, prefix: class_token(a),
    "mean": patch_mean,
}
