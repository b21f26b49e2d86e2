"""A differentiable supernet over a Space's width and depth dimensions (TAS's relaxation).

The supernet is a copy of the dense model. Each width group's feature maps are mixed over a
few sampled widths by channel-wise interpolation (CWI): the c most important channels (the
run's channel order, so a width means what the Slicer keeps) are resized along the channel
axis to the group's full size, and the resized maps are summed with the sampled weights.
Each depth stage's output is the weighted sum of its outputs after k blocks for the sampled k.
Mixing happens in forward hooks on the layers that produce a group's channels (its norm
layers, or its conv/linear layers where it has no norm) and in the stages' forward, so any
model the Space was built from works; the module tree and names are unchanged.

With `hard=True` a width choice keeps its c most important channels as they are and zeroes
the rest instead (a channel mask; a LayerNorm normalizes over the kept channels only): the
forward is then exactly the first-c subnetwork the Slicer builds (up to BatchNorm statistics),
which is how supernet training (sandwich rule) trains subnetworks.
"""

from __future__ import annotations

import copy
import types
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.spaces.arch import Dimension
from prunesearch.spaces.groups import ChannelGroup, Member
from prunesearch.spaces.layers import channels_last, cost_kind

_NORMS = ("norm", "layernorm", "rmsnorm")  # cost kinds whose layers normalize a group's channels

# per dimension: (choice index, weight) pairs of the current sample
Sample = Mapping[int, Sequence[tuple[int, torch.Tensor]]]


def channel_interpolate(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Resize `x` along dim 1 to `channels` by adaptive average pooling over the channel axis
    (TAS's CWI): the identity when the sizes are equal, shape-correct otherwise."""
    n, c = x.shape[:2]
    if c == channels:
        return x
    rest = x.shape[2:]
    flat = x.reshape(n, c, -1).transpose(1, 2).reshape(-1, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, channels)
    return pooled.reshape(n, -1, channels).transpose(1, 2).reshape(n, channels, *rest)


def _whole(member: Member, size: int) -> bool:
    """True when a member holds every root channel (unit) of its group, each as often: the
    layers whose output a width choice masks."""
    per, extra = divmod(len(member.idxs), size)
    return per > 0 and not extra and len(set(member.idxs)) == len(member.idxs) and all(
        n == per for n in Counter(member.roots).values()) and len(set(member.roots)) == size


class MixedSpace(Protocol):
    """What a Supernet needs of its Space (structural: space.py builds supernets to check
    its cuts, so this module does not import it)."""

    @property
    def dims(self) -> Sequence[Dimension]: ...

    def width_groups(self) -> list[tuple[int, ChannelGroup]]: ...

    def depth_stages(self) -> list[tuple[int, str]]: ...


class Supernet(nn.Module):
    """The dense model with every width and depth dimension mixed over the current sample."""

    def __init__(self, space: MixedSpace, model: nn.Module, order: Mapping[str, Sequence[int]],
                 hard: bool = False) -> None:
        super().__init__()
        self.space = space
        self.net = copy.deepcopy(model)
        self.sample: Sample = {}
        modules = dict(self.net.named_modules())
        for d, group in space.width_groups():
            rank = {root: r for r, root in enumerate(order[group.name])}
            # layers only: a parameter member (class token) reaches the group's channels
            # through a norm, or through a layer's output that is masked
            outs = [m for m in group.members if m.side == "out" and m.module in modules
                    and _whole(m, group.size)]
            norms = [m for m in outs if cost_kind(type(modules[m.module])) in _NORMS]
            for member in norms or outs:
                by_rank = sorted(zip(member.idxs, member.roots, strict=True),
                                 key=lambda ir: rank[ir[1]])
                perm = torch.tensor([i for i, _ in by_rank], dtype=torch.long)
                per = len(member.idxs) // group.size  # channels per root (grouped conv: > 1)
                module = modules[member.module]
                kind = cost_kind(type(module))
                last = channels_last(kind)
                if hard and kind in ("layernorm", "rmsnorm"):
                    hook = self._norm_hook(d, perm, per)
                elif hard:
                    hook = self._mask_hook(d, perm, per, last)
                else:
                    hook = self._width_hook(d, perm, per, last)
                module.register_forward_hook(hook)
        for d, stage in space.depth_stages():
            seq = self.net.get_submodule(stage)
            seq.forward = types.MethodType(self._depth_forward(d), seq)

    def _width_hook(self, d: int, perm: torch.Tensor, per: int, last: bool):
        choices = [c * per for c in self.space.dims[d].choices]

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            picks = self.sample.get(d)
            if not picks:
                return out
            if last:  # channels last (linear, layer norm, embedding): mix along dim 1
                return hook(module, args, out.movedim(-1, 1)).movedim(1, -1)
            idx = perm.to(out.device)  # the group's channels (of a concatenation: a part)
            ranked = out.index_select(1, idx)
            mixed = sum(w * channel_interpolate(ranked[:, :choices[g]], len(idx))
                        for g, w in picks)
            return out.index_copy(1, idx, mixed)

        return hook

    def _masks(self, d: int, perm: torch.Tensor, per: int) -> torch.Tensor:
        """masks[g, r]: 1 where choice g keeps the group's r-th most important channel."""
        choices = self.space.dims[d].choices
        masks = torch.zeros(len(choices), len(perm))
        for g, c in enumerate(choices):
            masks[g, :c * per] = 1.0
        return masks

    def _sampled_mask(self, d: int, masks: torch.Tensor, perm: torch.Tensor,
                      out: torch.Tensor, last: bool) -> torch.Tensor | None:
        """The current sample's (weighted) mask over the layer's output channels of dimension
        `d`: 1 on channels outside the group (a concatenation holds it at an offset) and on
        the kept ones; None: not sampled."""
        picks = self.sample.get(d)
        if not picks:
            return None
        ranked = sum(w * masks[g].to(out.device) for g, w in picks)
        channels = out.shape[-1 if last else 1]
        return torch.ones(channels, device=out.device, dtype=ranked.dtype).index_copy(
            0, perm.to(out.device), ranked)

    def _mask_hook(self, d: int, perm: torch.Tensor, per: int, last: bool):
        """Zero every channel but the c most important of the sampled width (weighted)."""
        masks = self._masks(d, perm, per)

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            mask = self._sampled_mask(d, masks, perm, out, last)
            if mask is None:
                return out
            return out * (mask if last else mask.view(1, -1, *([1] * (out.dim() - 2))))

        return hook

    def _norm_hook(self, d: int, perm: torch.Tensor, per: int):
        """A layer or RMS norm over the kept channels only (its statistics are what the sliced
        layer computes), the others zeroed; one sampled width (hard) at a time."""
        masks = self._masks(d, perm, per)

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            mask = self._sampled_mask(d, masks, perm, out, last=True)
            if mask is None:
                return out
            x = args[0].float()
            kept = mask.sum()
            centered = isinstance(module, nn.LayerNorm)
            if centered:
                x = x - (x * mask).sum(-1, keepdim=True) / kept
            eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) \
                or torch.finfo(x.dtype).eps
            y = x * torch.rsqrt(((x * mask) ** 2).sum(-1, keepdim=True) / kept + eps)
            if getattr(module, "weight", None) is not None:
                y = y * module.weight
            if getattr(module, "bias", None) is not None:
                y = y + module.bias
            return (y * mask).to(out.dtype)

        return hook

    def _depth_forward(self, d: int):
        choices = self.space.dims[d].choices
        supernet = self

        def forward(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
            picks = supernet.sample.get(d)
            if not picks:
                for block in seq:
                    x = block(x)
                return x
            wanted = {choices[g]: w for g, w in picks}
            out = 0
            for k, block in enumerate(seq, start=1):
                x = block(x)
                if k in wanted:
                    out = out + wanted[k] * x
                if k >= max(wanted):
                    break
            return out

        return forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
