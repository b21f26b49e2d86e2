"""A model without BatchNorm for the torchrun test: data-parallel steps then equal one
process's steps on the whole batch up to float summation order."""

from __future__ import annotations

import math

from torch import nn


def no_batchnorm(in_chans: int, num_classes: int, input_size: tuple[int, ...]) -> nn.Module:
    features = in_chans * math.prod(input_size)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))
