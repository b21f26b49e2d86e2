"""`dass`: differentiable search over weight densities with sparse operations (after "DASS:
Differentiable Architecture Search for Sparse neural networks").

Every density dimension (one per conv/linear layer) gets logits over its density choices. A
layer's sparse operation is the mix of its candidate masked weights, sum_j p_j (m_j * w), with
p = softmax(logits / tau) and m_j the magnitude mask of the current weights at choice j
(recomputed every step, no gradient through the selection: the weight gradient passes straight
through each mask). So w * (sum_j p_j m_j) is computed with one sort per layer. The objective's
sparsity-aware term is the shared MACs loss on E[sparse MACs] (expected density x weights per
layer). The final densities are the argmax per layer; the evaluator and fine-tuning apply them
as exact magnitude masks (held while fine-tuning, with distillation from the dense model).
Choices where the paper is silent or was not checked (documented in docs/architecture.md): a
softmax over choices (no Gumbel noise) with the annealed temperature, masks from the current
weights' magnitudes, the TAS-style band loss as the sparsity term.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from prunesearch.spaces import Space
from prunesearch.spaces.arch import DENSITY_PREFIX
from prunesearch.spaces.masks import kept_weights
from prunesearch.strategies.base import SearchContext
from prunesearch.strategies.differentiable import (
    DifferentiableOptions,
    DifferentiableStrategy,
    Relaxation,
)
from prunesearch.strategies.registry import register_strategy


class DassOptions(DifferentiableOptions):
    """Options of the `dass` strategy (weight densities); targets are sparse-MACs ratios."""

    targets: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.5],
                                 description="sparse-MACs ratios: one search each")


def soft_mask(weight: torch.Tensor, densities: tuple[float, ...],
              p: torch.Tensor) -> torch.Tensor:
    """sum_j p_j * (magnitude mask of `weight` at densities[j]): one sort per call."""
    mags = weight.detach().abs().flatten()
    ordered = torch.sort(mags, descending=True).values
    out = torch.zeros_like(weight)
    for j, d in enumerate(densities):
        threshold = ordered[kept_weights(mags.numel(), d) - 1]
        out = out + p[j] * (weight.detach().abs() >= threshold).to(weight.dtype)
    return out


class DassRelaxation(Relaxation):
    def __init__(self, space: Space, dims: list[int], seed: int,
                 model: torch.nn.Module) -> None:
        super().__init__(space, dims, seed)
        self.net = copy.deepcopy(model)
        self.layers = [space.dims[d].name[len(DENSITY_PREFIX):] for d in dims]

    def expected_densities(self) -> dict[int, torch.Tensor]:
        return {d: (p.cpu() * torch.tensor(self.space.dims[d].choices)).sum()
                for d, p in self.probs().items()}

    def expected_macs(self) -> torch.Tensor:
        return self.space.cost.expected_macs({}, {}, self.expected_densities())

    def forward(self, x: torch.Tensor, tau: float, gen: torch.Generator,
                arch_step: bool) -> torch.Tensor:
        modules = dict(self.net.named_modules())
        weights = {}
        for d, a, layer in zip(self.dims, self.alphas, self.layers, strict=True):
            p = F.softmax(a / tau, dim=0)
            w = modules[layer].weight
            weights[f"{layer}.weight"] = w * soft_mask(
                w, self.space.dims[d].choices, p if arch_step else p.detach())
        return functional_call(self.net, weights, (x,))


@register_strategy("dass", options=DassOptions)
class DassStrategy(DifferentiableStrategy):
    kinds = ("density",)
    space_hint = ("add weight-density choices, e.g. space.densities = [1.0, 0.5, 0.25, 0.1] "
                  "(see configs/masks.toml).")

    options: DassOptions

    def relax(self, ctx: SearchContext, dims: list[int], seed: int) -> Relaxation:
        return DassRelaxation(ctx.space, dims, seed, ctx.model)
