"""A multilayer perceptron: Flatten, hidden Linear + BN1d + ReLU layers, Linear classifier.
The only zoo model for flat feature data, and the only one that needs `input_size`."""

from __future__ import annotations

import math

import torch
from torch import nn

from prunesearch.models._layers import scale_width
from prunesearch.models.registry import register_model

HIDDEN = (256, 128)


class MLP(nn.Module):
    def __init__(
        self, in_features: int, hidden: tuple[int, ...], num_classes: int, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            out = scale_width(h, width_mult)
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU()]
            width = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)  # Linear and BN keep PyTorch's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model("mlp")
def mlp(in_chans: int, num_classes: int, width_mult: float = 1.0,
        input_size: tuple[int, ...] = (28, 28)) -> MLP:
    return MLP(in_chans * math.prod(input_size), HIDDEN, num_classes, width_mult)
