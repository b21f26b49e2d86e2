"""Weight-sharing evaluation: slice the dense weights, recalibrate BatchNorm, score on val.

A channel-pruned network scored with the dense model's BatchNorm statistics is near chance;
re-estimating the running statistics on a few training batches (adaptive BN) recovers most of
it, so every candidate is recalibrated on the same fixed batches before it is scored. Image
batches and the candidates that score them are kept channels-last (NHWC): oneDNN's convolutions
run faster that way (benchmarks/evaluator_throughput.py).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import nn

from prunesearch.errors import ConfigError
from prunesearch.evaluators.base import Evaluator
from prunesearch.evaluators.registry import register_evaluator
from prunesearch.options import Options
from prunesearch.scoring import Task
from prunesearch.spaces import Arch, Space, layer_densities
from prunesearch.spaces.masks import apply_masks, magnitude_masks

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by the exact average over `batches`
    (their momentum is restored after, so a model trained on later keeps its usual one)."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the result does not depend on batch order
        m.train()
    for x in batches:
        model(x)
    model.eval()
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch (4-d) channels-last; any other tensor as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class WeightSharingEvaluator(Evaluator):
    """Scores an Arch by slicing the shared dense weights (no training).

    `calib_x` are the fixed training images for adaptive BN, `val_x/val_y` the fixed validation
    subset; both are chosen once per run so every candidate sees the same data. A candidate
    that only masks weights is scored on one working copy of the dense model, refilled from
    the dense weights and re-masked in place: no model is copied per candidate.
    """

    def __init__(self, space: Space, model: nn.Module, calib_x: torch.Tensor,
                 val_x: torch.Tensor, val_y: torch.Tensor, batch_size: int = 256,
                 task: Task | None = None) -> None:
        super().__init__(space)
        self.task = task if task is not None else Task.default(val_y)
        self.slicer = space.slicer(model)
        self.calib = [_channels_last(x) for x in calib_x.split(batch_size)]
        self.val_x, self.val_y = _channels_last(val_x), val_y
        self.batch_size = batch_size
        self._work: nn.Module | None = None

    def build(self, arch: Arch) -> nn.Module:
        """The candidate as a real slim model with recalibrated BatchNorm, in eval mode, in the
        contiguous layout users load (so what is timed or exported from it is theirs)."""
        return self._sliced(arch).to(memory_format=torch.contiguous_format)

    def _sliced(self, arch: Arch) -> nn.Module:
        """The slim candidate, channels-last (a module's 4-d weights only), recalibrated."""
        sub = self.slicer.build(arch).to(memory_format=torch.channels_last)
        recalibrate_batchnorm(sub, self.calib)
        return sub

    def _candidate(self, arch: Arch) -> nn.Module:
        """The candidate, recalibrated; valid until the next call (it may be the work copy)."""
        if self.space.reshapes(arch):
            return self._sliced(arch)
        if self._work is None:
            self._work = copy.deepcopy(self.slicer.model).to(memory_format=torch.channels_last)
        self._work.load_state_dict(self.slicer.model.state_dict())
        apply_masks(self._work, magnitude_masks(self._work, layer_densities(arch.to_dict())))
        recalibrate_batchnorm(self._work, self.calib)
        return self._work

    @torch.no_grad()
    def calibration_logits(self, arch: Arch) -> torch.Tensor:
        """The candidate's logits on the calibration images (training split): what the
        layer-adaptive allocation measures output distortion on."""
        model = self._candidate(arch)
        return torch.cat([model(x) for x in self.calib])

    def _score(self, arch: Arch) -> float:
        return self.task.score(self._candidate(arch), self.val_x, self.val_y, self.batch_size)


DEFAULT_VAL_IMAGES = 1000


class WeightSharingOptions(Options):
    """The `[evaluator]` section of kind "weight-sharing"."""

    calib_batches: int = Field(8, ge=1, description="training batches for adaptive BN")
    batch_size: int = Field(256, ge=1)
    val_images: int | None = Field(None, ge=1, description="fixed validation subset for the "
                                   "proxy (default: 1000, or the whole validation split when "
                                   "it is smaller)")


def calibration_images(data: DatasetSplits, options: WeightSharingOptions,
                       seed: int) -> torch.Tensor:
    """The fixed training images every candidate's BatchNorm is recalibrated on."""
    n = options.calib_batches * options.batch_size
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_x), generator=g)[:n]
    return data.train_x[idx.to(data.train_x.device)]


@register_evaluator("weight-sharing", options=WeightSharingOptions)
def build_weight_sharing(space: Space, model: nn.Module, data: DatasetSplits,
                         options: WeightSharingOptions, seed: int) -> WeightSharingEvaluator:
    n_val = options.val_images or min(DEFAULT_VAL_IMAGES, len(data.val_x))
    if n_val > len(data.val_x):
        raise ConfigError(f"evaluator.val_images ({n_val}) exceeds the validation split "
                          f"({len(data.val_x)} examples); lower evaluator.val_images or raise "
                          f"data.val_size.")
    return WeightSharingEvaluator(space, model, calibration_images(data, options, seed),
                                  data.val_x[:n_val], data.val_y[:n_val], options.batch_size,
                                  data.task)
