"""Building blocks shared by the zoo models."""

from __future__ import annotations

from torch import nn


def scale_width(channels: int, width_mult: float) -> int:
    """A layer's channel count at `width_mult`, at least one channel."""
    return max(1, round(channels * width_mult))


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias: the BN shift makes it redundant) + BN + optional activation module.
    Activations are modules, not functional calls, so op counters and tracers see them."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (He et al. 2015, fan_out as in torchvision's ResNet/MobileNetV2).
    BN (weight 1, bias 0) and Linear keep PyTorch's standard initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
