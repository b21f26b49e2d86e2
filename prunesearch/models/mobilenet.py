"""A small MobileNetV2 (Sandler et al. 2018) for 28x28 inputs.

Inverted residual blocks: 1x1 expansion (skipped when the expansion factor is 1), 3x3 depthwise
conv, linear 1x1 projection; the input is added back when stride is 1 and the channels match.
Compared with the ImageNet network the stem keeps the full resolution and there are four stages
of 16..64 channels, so the model costs about 8M MACs on 1x28x28. In every stage all blocks after
the first are same-shape residual blocks, so every stage is a depth stage (see depth.py).
"""

from __future__ import annotations

import torch
from torch import nn

from prunesearch.models._layers import conv_bn, init_weights, scale_width
from prunesearch.models.depth import StagedModel
from prunesearch.models.registry import register_model

STEM_CHANNELS = 16
# (expansion factor t, output channels c, blocks n, stride of the first block s) as in Table 2
SMALL_STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 2, 1))
HEAD_CHANNELS = 256


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.expand = conv_bn(in_ch, hidden, kernel=1, act=nn.ReLU6) if expansion != 1 else None
        self.depthwise = conv_bn(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6)
        # no activation after the projection: the paper's linear bottleneck
        self.project = conv_bn(hidden, out_ch, kernel=1, act=None)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class MobileNetV2(StagedModel):
    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int], ...],
        in_chans: int,
        num_classes: int,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        in_ch = scale_width(STEM_CHANNELS, width_mult)
        self.stem = conv_bn(in_chans, in_ch, act=nn.ReLU6)
        self.stages = nn.ModuleList()
        for t, c, n, s in stages:
            out_ch = scale_width(c, width_mult)
            blocks = [InvertedResidual(in_ch if b == 0 else out_ch, out_ch, s if b == 0 else 1, t)
                      for b in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        head = scale_width(HEAD_CHANNELS, width_mult)
        self.head = conv_bn(in_ch, head, kernel=1, act=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(self.flatten(self.pool(self.head(x))))


@register_model("mobilenetv2_small")
def mobilenetv2_small(in_chans: int, num_classes: int, width_mult: float = 1.0,
                      input_size: tuple[int, ...] = (28, 28)) -> MobileNetV2:
    return MobileNetV2(SMALL_STAGES, in_chans, num_classes, width_mult)
