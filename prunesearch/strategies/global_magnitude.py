"""`global-magnitude`: one magnitude threshold over all masked layers ("Is Complexity Required
for Neural Network Pruning?"), swept over overall densities, scored by weight sharing.

A global threshold keeps, in each layer, that layer's largest weights: it is a per-layer
density allocation, so it lives in the same density space as every other strategy. Each
layer's density is rounded to the nearest choice of the density grid (log scale); the archive
records the rounded arch's exact cost. For each of `search.masks.densities` the threshold is
lowered until the rounded arch keeps at most that density, so targets are met.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from prunesearch.errors import ConfigError
from prunesearch.options import Options
from prunesearch.spaces import Arch
from prunesearch.spaces.masks import global_magnitude_densities
from prunesearch.strategies.base import AskTellStrategy, SearchContext
from prunesearch.strategies.registry import register_strategy


class MaskTargetOptions(Options):
    """Overall weight densities a mask strategy aims at (one network or first candidate each)."""

    densities: list[float] = Field(default_factory=list, description="overall weight "
                                   "densities (global-magnitude: evaluated first, then a sweep; "
                                   "random-masks/bip: one trained network each)")

    @field_validator("densities")
    @classmethod
    def _densities_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < d <= 1 for d in v):
            raise ValueError("densities must be fractions of the weights in (0, 1]")
        return sorted(set(v), reverse=True)


class GlobalMagnitudeOptions(MaskTargetOptions):
    min_density: float = Field(0.0, ge=0, lt=1, description="per-layer floor")


def density_sweep(ctx: SearchContext, first: list[float]) -> list[float]:
    """Overall densities: the configured ones, then a geometric sweep from dense down to the
    grid's smallest density, as many as the budget allows."""
    lowest = min(min(ctx.space.dims[d].choices) for d, _ in ctx.space.density_layers())
    return list(first) + list(np.geomspace(1.0, lowest, max(2, ctx.remaining())))


def require_density_space(ctx: SearchContext, name: str) -> list[str]:
    """The masked layers of the space; a clear error when there are none or no model."""
    layers = [layer for _, layer in ctx.space.density_layers()]
    if not layers or ctx.model is None:
        raise ConfigError(f"search.strategy = '{name}' allocates weight masks and needs density "
                          f"dimensions: set space.densities (e.g. [0.05, 0.1, 0.2, 0.5, 1.0]).")
    return layers


@register_strategy("global-magnitude", options=GlobalMagnitudeOptions)
class GlobalMagnitudeStrategy(AskTellStrategy):
    options: GlobalMagnitudeOptions
    axes = ("macs", "params")  # masks alone leave dense kernels' latency as it was

    def __init__(self, options: GlobalMagnitudeOptions) -> None:
        super().__init__(options)
        self._queue: list[Arch] = []

    def start(self, ctx: SearchContext) -> None:
        layers = require_density_space(ctx, self.name)
        targets = [self._at_most(ctx, layers, d) for d in self.options.densities]
        sweep = [self._rounded(ctx, layers, d) for d in density_sweep(ctx, [])]
        self._queue = list(dict.fromkeys(targets + sweep))

    def _rounded(self, ctx: SearchContext, layers: list[str], density: float) -> Arch:
        return ctx.space.with_densities(global_magnitude_densities(
            ctx.model, layers, density, self.options.min_density))

    def _at_most(self, ctx: SearchContext, layers: list[str], target: float) -> Arch:
        """The allocation of the largest global threshold density whose grid-rounded arch
        keeps at most `target` of the weights (rounding alone could overshoot it)."""
        arch = self._rounded(ctx, layers, target)
        if ctx.space.weight_density(arch) <= target:
            return arch
        lo, hi, best = 0.0, target, self._rounded(ctx, layers, 0.0)
        for _ in range(20):
            mid = (lo + hi) / 2
            arch = self._rounded(ctx, layers, mid)
            if ctx.space.weight_density(arch) <= target:
                lo, best = mid, arch
            else:
                hi = mid
        return best

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked
