"""The exported network: uint8 NHWC images in, one pooled vector per tap layer out.

Resizing to the backbone's input size and normalization happen inside the graph, so
clients send raw decoded pixels (small for CIFAR's 32x32) and never re-implement the
preprocessing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from tlfs.models.backbones import BackboneSpec


class TapNetwork(nn.Module):
    def __init__(self, spec: BackboneSpec, backbone: nn.Module, taps: list[str] | None = None):
        super().__init__()
        self.tap_names = taps or spec.tap_names
        nodes = {spec.taps[name]: name for name in self.tap_names}
        self.extractor = create_feature_extractor(backbone, return_nodes=nodes)
        self.size = (spec.input_size, spec.input_size)
        std = torch.tensor(spec.std).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        # the network's own precision: a .half() copy (the fp16 bench row) computes in fp16
        x = images.permute(0, 3, 1, 2).to(self.scale.dtype)
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x * self.scale + self.shift

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.extractor(self.preprocess(images))
        return tuple(pool(out[name]) for name in self.tap_names)


def pool(activation: torch.Tensor) -> torch.Tensor:
    """Global average pool of a feature map; vectors (e.g. VGG's fc7) pass through."""
    return activation.mean(dim=(2, 3)) if activation.dim() == 4 else activation
