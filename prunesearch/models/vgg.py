"""A small VGG-style CNN: 3x3 conv + BN + ReLU layers with max pooling, no residuals."""

from __future__ import annotations

import torch
from torch import nn

from prunesearch.models._layers import conv_bn, init_weights, scale_width
from prunesearch.models.registry import register_model

# channels of each conv layer; 'M' is a 2x2 max pool (28x28 -> 7x7, 8x8 -> 2x2)
VGG_SMALL = (32, "M", 64, "M", 128, 128)


class VGG(nn.Module):
    def __init__(
        self,
        layout: tuple[int | str, ...],
        in_chans: int,
        num_classes: int,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_chans
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out_ch = scale_width(int(item), width_mult)
                layers.append(conv_bn(in_ch, out_ch))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


@register_model("vgg_small")
def vgg_small(in_chans: int, num_classes: int, width_mult: float = 1.0,
              input_size: tuple[int, ...] = (28, 28)) -> VGG:
    return VGG(VGG_SMALL, in_chans, num_classes, width_mult)
