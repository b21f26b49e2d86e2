"""CIFAR-style ResNet (He et al. 2016, sec. 4.2): 6n+2 layers in three stages of n basic blocks.

The first block of stages 2 and 3 halves the resolution and doubles the channels; its shortcut
is a 1x1 conv + BN projection (option B). Every other block keeps the shape, which is what makes
trailing blocks droppable for depth search (see depth.py).
"""

from __future__ import annotations

import torch
from torch import nn

from prunesearch.models._layers import conv_bn, init_weights, scale_width
from prunesearch.models.depth import StagedModel
from prunesearch.models.registry import register_model

STAGE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = conv_bn(in_ch, out_ch, kernel=1, stride=stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        # a plain `+`: torch-pruning's DependencyGraph traces it and couples both branches
        return self.relu2(out + identity)


class ResNet(StagedModel):
    def __init__(
        self, blocks_per_stage: int, in_chans: int, num_classes: int, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        widths = [scale_width(c, width_mult) for c in STAGE_CHANNELS]
        self.stem = conv_bn(in_chans, widths[0])
        self.stages = nn.ModuleList()
        in_ch = widths[0]
        for i, out_ch in enumerate(widths):
            first_stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_ch if b == 0 else out_ch, out_ch, first_stride if b == 0 else 1)
                      for b in range(blocks_per_stage)]
            self.stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        # adaptive pooling: the same network runs on 28x28, 32x32 or 8x8 inputs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(self.flatten(self.pool(x)))


# input_size is part of every factory's signature (see registry.ModelFactory); CNNs ignore it.


@register_model("resnet20")
def resnet20(in_chans: int, num_classes: int, width_mult: float = 1.0,
             input_size: tuple[int, ...] = (28, 28)) -> ResNet:
    return ResNet(3, in_chans, num_classes, width_mult)


@register_model("resnet32")
def resnet32(in_chans: int, num_classes: int, width_mult: float = 1.0,
             input_size: tuple[int, ...] = (28, 28)) -> ResNet:
    return ResNet(5, in_chans, num_classes, width_mult)


@register_model("resnet56")
def resnet56(in_chans: int, num_classes: int, width_mult: float = 1.0,
             input_size: tuple[int, ...] = (28, 28)) -> ResNet:
    return ResNet(9, in_chans, num_classes, width_mult)
