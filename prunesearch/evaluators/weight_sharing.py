"""Weight-sharing evaluation: slice the dense weights, recalibrate BatchNorm, score on val.

A channel-pruned network scored with the dense model's BatchNorm statistics is near chance;
re-estimating the running statistics on a few training batches (adaptive BN) recovers most of
it, so every candidate is recalibrated on the same fixed batches before it is scored.
"""

from __future__ import annotations

import torch
from torch import nn

from prunesearch.evaluators.base import Evaluator
from prunesearch.models import evaluate_accuracy
from prunesearch.spaces import Arch, Space

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by the exact average over `batches`."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the result does not depend on batch order
        m.train()
    for x in batches:
        model(x)
    model.eval()


class WeightSharingEvaluator(Evaluator):
    """Scores an Arch by slicing the shared dense weights (no training).

    `calib_x` are the fixed training images for adaptive BN, `val_x/val_y` the fixed validation
    subset; both are chosen once per run so every candidate sees the same data.
    """

    def __init__(self, space: Space, model: nn.Module, calib_x: torch.Tensor,
                 val_x: torch.Tensor, val_y: torch.Tensor, batch_size: int = 256) -> None:
        super().__init__(space)
        self.slicer = space.slicer(model)
        self.calib = list(calib_x.split(batch_size))
        self.val_x, self.val_y = val_x, val_y
        self.batch_size = batch_size

    def build(self, arch: Arch) -> nn.Module:
        """The candidate as a real slim model with recalibrated BatchNorm, in eval mode."""
        sub = self.slicer.build(arch)
        recalibrate_batchnorm(sub, self.calib)
        return sub

    def _score(self, arch: Arch) -> float:
        return evaluate_accuracy(self.build(arch), self.val_x, self.val_y, self.batch_size)
