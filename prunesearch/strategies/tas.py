"""`tas`: Transformable Architecture Search (Dong & Yang, NeurIPS 2019) over width and depth.

Every width dimension gets learnable logits over its channel choices, every depth dimension
logits over blocks kept. Each forward samples `n_sample` choices per dimension from the
Gumbel-perturbed logits (weights: their tempered softmax renormalised over the picks) and runs
the supernet (spaces/supernet.py: channel-wise interpolation of the sampled widths, weighted
sum of the sampled depths). E[MACs] uses the expected channels of each group and the
probability that each block is kept (equal to the analytic MACs for one-hot distributions).
The training loop, MACs loss, annealing, final choice and resume are the shared ones of
search/differentiable.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prunesearch.spaces import Space
from prunesearch.spaces.supernet import Supernet
from prunesearch.strategies.base import SearchContext
from prunesearch.strategies.differentiable import (
    DifferentiableOptions,
    DifferentiableStrategy,
    Relaxation,
)
from prunesearch.strategies.registry import register_strategy


class TasOptions(DifferentiableOptions):
    """Options of the `tas` strategy (widths and depths)."""

    n_sample: int = Field(2, ge=1, description="choices sampled per dimension per step")


def expected_macs(space: Space, probs: dict[int, torch.Tensor]) -> torch.Tensor:
    """E[MACs] under independent per-dimension distributions `probs[d]` over choices."""
    channels, kept = {}, {}
    for d, p in probs.items():
        dim = space.dims[d]
        if dim.kind == "width":
            channels[d] = (p * torch.tensor(dim.choices, dtype=p.dtype)).sum()
        elif dim.kind == "depth":
            kept[d] = space.block_kept(d, p)
    return space.cost.expected_macs(channels, kept)


def gumbel_picks(logits: torch.Tensor, tau: float, n: int,
                 gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """`n` choices by Gumbel-perturbed logits, weighted by their tempered softmax
    renormalised over the picks (differentiable in the logits)."""
    u = torch.rand(logits.shape, generator=gen).clamp_(1e-9, 1 - 1e-9)
    probs = F.softmax((logits - torch.log(-torch.log(u)).to(logits.device)) / tau, dim=0)
    top = torch.topk(probs.detach(), min(n, len(logits))).indices.tolist()
    weights = probs[top] / probs[top].sum()
    return list(zip(top, weights, strict=True))


class TasRelaxation(Relaxation):
    def __init__(self, space: Space, dims: list[int], seed: int, model: torch.nn.Module,
                 n_sample: int) -> None:
        super().__init__(space, dims, seed)
        self.net = Supernet(space, model, space.channel_order())
        self.n_sample = n_sample

    def expected_macs(self) -> torch.Tensor:
        return expected_macs(self.space, {d: p.cpu() for d, p in self.probs().items()})

    def forward(self, x: torch.Tensor, tau: float, gen: torch.Generator,
                arch_step: bool) -> torch.Tensor:
        sample = {}
        for d, a in zip(self.dims, self.alphas, strict=True):
            picks = gumbel_picks(a, tau, self.n_sample, gen)
            sample[d] = picks if arch_step else [(g, w.detach()) for g, w in picks]
        self.net.sample = sample
        try:
            return self.net(x)
        finally:
            self.net.sample = {}


@register_strategy("tas", options=TasOptions)
class TasStrategy(DifferentiableStrategy):
    kinds = ("width", "depth")
    axes = ("macs", "latency")  # latency: the expectation of the run's latency table

    options: TasOptions

    def relax(self, ctx: SearchContext, dims: list[int], seed: int) -> Relaxation:
        return TasRelaxation(ctx.space, dims, seed, ctx.model, self.options.n_sample)
