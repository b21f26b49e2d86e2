"""Attention heads as a width dimension, for attention modules registered here.

torch-pruning's dependency graph cannot see heads: q/k/v outputs are reshaped into (heads,
head_dim) and multiplied with each other. So an attention module's projections are taken out of
its graph (their output channels are never a torch-pruning group) and each module becomes one
group of its own over whole heads: the q, k and v output channels and the output projection's
input channels of a head go together, the head dimension stays (rotary embeddings keep
working). With grouped-query attention a unit is one key/value head with the query heads that
share it. Input channels of the projections stay in the embedding's group as before.

`register_attention(type, layout=fn, resize=fn)` adds a module type: `layout(module)` names its
projections (relative to the module) and head counts; `resize(module)`, when the module keeps
head counts in attributes, updates them from its (sliced) projections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prunesearch.spaces.groups import ChannelGroup, Member


@dataclass(frozen=True)
class HeadLayout:
    """Projections of one attention module (relative names) and its head counts."""

    q: str
    k: str
    v: str
    o: str
    heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class _Attention:
    layout: Callable[[nn.Module], HeadLayout]
    resize: Callable[[nn.Module], None] | None


_ATTENTION: dict[type[nn.Module], _Attention] = {}


def register_attention(*types: type[nn.Module], layout: Callable[[nn.Module], HeadLayout],
                       resize: Callable[[nn.Module], None] | None = None) -> None:
    """Register attention module types whose heads are searched (see the module docstring)."""
    for t in types:
        if t in _ATTENTION:
            raise ValueError(f"Attention type {t.__name__} is already registered.")
    for t in types:
        _ATTENTION[t] = _Attention(layout, resize)


@dataclass(frozen=True)
class Heads:
    """One attention module of a model: qualified names and its layout."""

    module: str
    layout: HeadLayout

    def projection(self, part: str) -> str:
        return f"{self.module}.{getattr(self.layout, part)}" if self.module else \
            getattr(self.layout, part)

    @property
    def projections(self) -> tuple[str, str, str, str]:
        return tuple(self.projection(p) for p in "qkvo")  # type: ignore[return-value]

    def group(self) -> ChannelGroup:
        """Whole heads as one channel group: its roots are the key/value heads."""
        lay = self.layout
        per_q = lay.heads // lay.kv_heads * lay.head_dim  # query channels per unit
        q_idxs = tuple(range(lay.heads * lay.head_dim))
        kv_idxs = tuple(range(lay.kv_heads * lay.head_dim))
        q_roots = tuple(i // per_q for i in q_idxs)
        kv_roots = tuple(i // lay.head_dim for i in kv_idxs)
        q, k, v, o = self.projections
        unit = "heads" if lay.heads == lay.kv_heads else "key/value heads"
        return ChannelGroup(self.module, lay.kv_heads, (
            Member(q, "out", q_idxs, q_roots), Member(k, "out", kv_idxs, kv_roots),
            Member(v, "out", kv_idxs, kv_roots), Member(o, "in", q_idxs, q_roots)), unit)

    @torch.no_grad()
    def importance(self, modules: dict[str, nn.Module], taylor: bool = False) -> torch.Tensor:
        """Per unit: the L1 norm of its q/k/v rows and output-projection columns (with
        `taylor`: of |weight x gradient|), each projection weighed alike (normalized by its
        mean)."""
        total = torch.zeros(self.layout.kv_heads)
        for member in self.group().members:
            weight = modules[member.module].weight
            w = (weight * weight.grad if taylor else weight).detach().float().abs()
            per_channel = w.sum(1) if member.side == "out" else w.sum(0)
            units = torch.zeros(self.layout.kv_heads).index_add_(
                0, torch.tensor(member.roots), per_channel[list(member.idxs)])
            total += units / units.mean().clamp_min(1e-12)
        return total


def find_heads(model: nn.Module, ignore: set[str]) -> list[Heads]:
    """The registered attention modules of `model` none of whose projections is ignored."""
    found = []
    for name, module in model.named_modules():
        entry = _ATTENTION.get(type(module))
        if entry is not None:
            heads = Heads(name, entry.layout(module))
            if not ignore.intersection(heads.projections):
                found.append(heads)
    return found


def resize_attention(model: nn.Module) -> None:
    """Update head-count attributes of every registered attention module after slicing."""
    for module in model.modules():
        entry = _ATTENTION.get(type(module))
        if entry is not None and entry.resize is not None:
            entry.resize(module)
