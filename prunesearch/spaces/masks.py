"""Weight masks of density dimensions: within one layer, keep the weights of largest magnitude.

A layer of n weights at density d keeps exactly `kept_weights(n, d)` of them, both in the mask
and in the analytic cost, so the sparse MACs of an Arch equal a count over its non-zero weights.
While a masked model trains, torch's pruning reparametrization (`weight = weight_orig * mask`)
keeps the pruned weights at zero; `release_masks` makes the zeros permanent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def kept_weights(n: int, density: float) -> int:
    """Weights a layer of `n` keeps at `density`: never none, all at density 1."""
    return n if density >= 1 else max(1, min(n, round(density * n)))


def magnitude_mask(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of `weight`'s shape keeping exactly `kept_weights` largest |w|."""
    flat = weight.detach().abs().flatten()
    keep = kept_weights(flat.numel(), density)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(weight)


def maskable_layers(model: nn.Module, ignore: set[str] = frozenset()) -> list[str]:
    """Names of the conv/linear layers that can carry a weight mask, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, MASKABLE) and n not in ignore]


def magnitude_masks(model: nn.Module, densities: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """A magnitude mask per layer of `densities` that the model has (a layer inside a dropped
    block is simply absent)."""
    modules = dict(model.named_modules())
    return {name: magnitude_mask(modules[name].weight, d) for name, d in densities.items()
            if name in modules}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out weights in place."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        modules[name].weight.mul_(mask.to(modules[name].weight.dtype))


def hold_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Keep masked weights at zero through training (gradients of pruned weights vanish)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name], "weight", mask.to(modules[name].weight.device))


def release_masks(model: nn.Module) -> None:
    """Fold held masks into plain weights (zeros stay), so the state_dict is an ordinary one."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def global_magnitude_densities(model: nn.Module, layers: list[str], density: float,
                               min_density: float = 0.0) -> dict[str, float]:
    """Per-layer densities of ONE magnitude threshold over all `layers` keeping `density` of
    their weights ("Is Complexity Required for Neural Network Pruning?"). A layer below
    `min_density` is lifted to it and the threshold re-solved for the others, so the total
    still matches (up to rounding)."""
    modules = dict(model.named_modules())
    sizes = {n: modules[n].weight.numel() for n in layers}
    total_keep = density * sum(sizes.values())
    floor: dict[str, float] = {}
    while True:
        free = [n for n in layers if n not in floor]
        budget = total_keep - sum(min_density * sizes[n] for n in floor)
        mags = torch.cat([modules[n].weight.detach().abs().flatten() for n in free])
        keep = int(min(max(budget, 0), mags.numel()))
        threshold = float(torch.topk(mags, keep).values.min()) if keep > 0 else float("inf")
        out = {n: float((modules[n].weight.detach().abs() >= threshold).sum()) / sizes[n]
               for n in free}
        low = [n for n in free if out[n] < min_density]
        if not low:
            return {**{n: min_density for n in floor}, **out}
        floor.update(dict.fromkeys(low, min_density))


def erk_densities(model: nn.Module, layers: list[str], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities ("Rigging the Lottery"): proportional to
    (fan_in + fan_out + kernel dims) / (weights), scaled so `density` of all weights stays;
    layers that would exceed 1 are kept dense and the rest re-scaled."""
    modules = dict(model.named_modules())
    shapes = {n: modules[n].weight.shape for n in layers}
    sizes = {n: modules[n].weight.numel() for n in layers}
    raw = {n: sum(shape) / sizes[n] for n, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        free = [n for n in layers if n not in dense]
        scale = budget / sum(raw[n] * sizes[n] for n in free) if free else 0.0
        over = [n for n in free if raw[n] * scale > 1]
        if not over:
            return {n: 1.0 if n in dense else raw[n] * scale for n in layers}
        dense.update(over)


def random_masks(model: nn.Module, densities: Mapping[str, float],
                 gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks keeping `kept_weights` weights per layer chosen uniformly at random."""
    modules = dict(model.named_modules())
    masks = {}
    for name, d in densities.items():
        w = modules[name].weight
        keep = kept_weights(w.numel(), d)
        mask = torch.zeros(w.numel(), dtype=torch.bool)
        mask[torch.randperm(w.numel(), generator=gen)[:keep]] = True
        masks[name] = mask.view(w.shape)
    return masks
