"""Analytic MACs and parameters of any Arch, without building a model.

Counting follows torch-pruning's `count_ops_and_params` exactly (conv/linear multiply-adds plus
the element-wise ops it counts for norms, activations and pooling), so the analytic numbers equal
what the exported model costs; which rule a layer type follows is its cost kind, registered in
`layers.py`. The model is probed once: the dense forward, then one forward per width dimension
with that dimension at its smallest choice. Every tensor's channel count is linear in the kept
channels of the groups feeding it (identity, concat, flatten), so the probes give each tensor's
slope per group, and a cost is a short sum over recorded layer calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch_pruning.utils import op_counter

from prunesearch.errors import ModelError
from prunesearch.spaces.layers import CostKind, channels_last, cost_kind
from prunesearch.spaces.masks import kept_weights


@dataclass(frozen=True)
class _Side:
    """A tensor's size as a function of the Arch: `unit` elements per channel along `axis`."""

    full: int
    unit: int
    slopes: tuple[tuple[int, int], ...]  # (width dim index, channels lost per channel removed)

    def channels(self, lost: Sequence[int]) -> int:
        return self.full - sum(s * lost[d] for d, s in self.slopes)

    def numel(self, lost: Sequence[int]) -> int:
        return self.unit * self.channels(lost)


@dataclass(frozen=True)
class _Call:
    module: str
    kind: CostKind
    block: tuple[int, int] | None  # (depth dim index, block index) if inside a droppable block
    inp: _Side
    out: _Side
    kernel: int = 1
    bias: bool = False
    groups: int = 1
    affine: bool = False
    rows: int = 0  # an embedding's table rows
    fixed_ops: int = 0  # an opaque layer's ops, counted on the dense call

    @property
    def positions(self) -> int:
        """How often each weight multiplies per example: output positions of a conv, input
        rows of a linear layer."""
        return self.out.unit if self.kind == "conv" else self.inp.unit

    def weights(self, lost: Sequence[int], density: float) -> int:
        """Weights of a conv/linear layer kept at `density` (its mask's non-zeros). Channel
        counts may be tensors of expected channels (then density is 1): the formula stays
        differentiable."""
        cout = self.out.channels(lost)
        # a grouped conv loses whole groups: each output channel keeps its group's inputs
        per_out = self.inp.channels(lost) if self.groups == 1 else self.inp.full // self.groups
        return kept_weights(cout * per_out * self.kernel, density)

    def ops(self, lost: Sequence[int], density: float = 1.0) -> int:
        """Every kept weight multiplies once per output position (conv) or input row
        (linear): that is how count_ops_and_params counts dense layers, and how a sparse layer
        costs only its non-zero weights."""
        if self.kind == "conv":
            bias = self.out.channels(lost) * self.positions if self.bias else 0
            return self.weights(lost, density) * self.positions + bias
        if self.kind == "linear":
            bias = self.out.channels(lost) if self.bias else 0
            return self.weights(lost, density) * self.positions + bias
        if self.kind in ("norm", "layernorm"):
            return self.inp.numel(lost) * (2 if self.affine else 1)
        if self.kind == "act":
            return self.out.numel(lost)
        if self.kind in ("embedding", "rmsnorm"):
            return 0
        if self.kind == "opaque":
            return self.fixed_ops
        return self.inp.numel(lost)  # pool

    def params(self, lost: Sequence[int], density: float = 1.0) -> int:
        if self.kind in ("conv", "linear"):
            return self.weights(lost, density) + (self.out.channels(lost) if self.bias else 0)
        if self.kind in ("norm", "layernorm", "rmsnorm") and self.affine:
            return self.out.channels(lost) * (2 if self.bias else 1)
        if self.kind == "embedding":
            return self.rows * self.out.channels(lost)
        return 0


def _each_call(model: nn.Module, example: torch.Tensor, kinds: Callable[[CostKind], bool],
               record: Callable[[str, nn.Module, Any, Any], None]) -> None:
    """One forward of `example` in eval mode without gradients, `record(name, module, args,
    output)` called at every call of each layer whose cost kind `kinds` accepts."""
    handles = []
    for name, module in model.named_modules():
        kind = cost_kind(type(module))
        if kind is not None and kinds(kind):
            handles.append(module.register_forward_hook(
                lambda mod, args, out, name=name: record(name, mod, args, out)))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()


def record_calls(model: nn.Module, example: torch.Tensor
                 ) -> dict[str, list[tuple[torch.Size, ...]]]:
    """(input shape, output shape) of every call of every counted layer, in the order of
    `CostModel.calls` (module registration order, then call order)."""
    calls: dict[str, list[tuple[torch.Size, ...]]] = {}

    def shapes(name: str, _: nn.Module, args: Any, out: Any) -> None:
        calls.setdefault(name, []).append((_first(args).shape, _first(out).shape))
    _each_call(model, example, lambda kind: True, shapes)
    return calls


def _first(value: Any) -> torch.Tensor:
    """A call's first tensor: the input of a layer called with several (query, key, value),
    the output of one returning a tuple (a recurrent layer's output and state)."""
    return value if isinstance(value, torch.Tensor) else next(
        v for v in value if isinstance(v, torch.Tensor))


def opaque_ops(model: nn.Module, example: torch.Tensor) -> dict[str, list[int]]:
    """The ops torch-pruning's counter gives each call of every opaque layer (its own rule
    for recurrent layers and attention), in call order; no forward when there is none."""
    ops: dict[str, list[int]] = {}

    def count(name: str, mod: nn.Module, args: Any, out: Any) -> None:
        mod.__flops__ = 0
        op_counter.MODULES_MAPPING[type(mod)](mod, args, out)
        ops.setdefault(name, []).append(int(mod.__flops__))
        del mod.__flops__
    if any(cost_kind(type(m)) == "opaque" for m in model.modules()):
        _each_call(model, example, lambda kind: kind == "opaque", count)
    return ops


def _axis(kind: CostKind, shapes: Sequence[torch.Size], dense: torch.Size) -> int:
    changed = {a for s in shapes for a in range(len(dense)) if s[a] != dense[a]}
    if len(changed) > 1:
        raise ModelError(f"A tensor of shape {tuple(dense)} shrinks along several axes when "
                         f"channels are pruned; prunesearch cannot count its cost.")
    if changed:
        return changed.pop()
    return len(dense) - 1 if channels_last(kind) else min(1, len(dense) - 1)


@dataclass(frozen=True)
class _Parameters:
    """Parameters outside the modeled layers in one block (or outside every droppable
    block): `full` in the dense model, fewer by `slope` per channel a width dim loses (a class
    token or position table in the embedding's group; most have no slope)."""

    block: tuple[int, int] | None
    full: int
    slopes: tuple[tuple[int, int], ...]


class CostModel:
    """MACs and params of an Arch from layer calls recorded on probe forwards (batch of one)."""

    def __init__(self, calls: list[_Call], modeled: set[str], other_params: list[_Parameters],
                 dims_full: Sequence[int], depth_dims: Sequence[int],
                 density_dims: dict[str, int]):
        self.calls = calls
        self.other_params = other_params
        self._full = list(dims_full)
        self._depth = list(depth_dims)
        self._density_dim = density_dims  # module name -> its density dimension
        # A modeled layer counts its params once, on its first call.
        self._param_calls = []
        seen: set[str] = set()
        for cl in calls:
            if cl.module in modeled and cl.module not in seen:
                self._param_calls.append(cl)
            seen.add(cl.module)

    @classmethod
    def probe(cls, model: nn.Module, example: torch.Tensor,
              width_probes: dict[int, tuple[int, nn.Module]],
              blocks: Callable[[str], tuple[int, int] | None],
              dims_full: Sequence[int], depth_dims: Sequence[int],
              density_dims: dict[str, int]) -> CostModel:
        """`width_probes[d] = (channels removed, model with only dim d at its smallest)`;
        `density_dims[layer] = d`: the dimension holding that conv/linear layer's density."""
        dense = record_calls(model, example)
        fixed = opaque_ops(model, example)
        probes = {d: (lost, record_calls(m, example)) for d, (lost, m) in width_probes.items()}
        modules = dict(model.named_modules())
        calls: list[_Call] = []
        modeled: set[str] = set()
        for name, shapes in dense.items():
            module = modules[name]
            kind = cost_kind(type(module))
            assert kind is not None
            for c, (in_shape, out_shape) in enumerate(shapes):
                sides = []
                for s, dense_shape in enumerate((in_shape, out_shape)):
                    seen = [p[1][name][c][s] for p in probes.values()]
                    axis = _axis(kind, seen, dense_shape)
                    full = dense_shape[axis]
                    slopes = []
                    for d, (lost, rec) in probes.items():
                        delta = full - rec[name][c][s][axis]
                        if delta:
                            if delta % lost:
                                raise ModelError(f"Channels of '{name}' do not shrink linearly "
                                                 f"with its group; cannot count its cost.")
                            slopes.append((d, delta // lost))
                    unit = math.prod(dense_shape) // full
                    sides.append(_Side(full, unit, tuple(slopes)))
                calls.append(_Call(
                    name, kind, blocks(name), sides[0], sides[1],
                    kernel=math.prod(module.kernel_size) if kind == "conv" else 1,
                    bias=getattr(module, "bias", None) is not None,
                    groups=getattr(module, "groups", 1),
                    affine=isinstance(getattr(module, "weight", None), torch.Tensor),
                    rows=getattr(module, "num_embeddings", 0),
                    fixed_ops=fixed[name][c] if kind == "opaque" else 0,
                ))
            if kind in ("conv", "linear", "norm", "layernorm", "embedding", "rmsnorm"):
                modeled.add(name)
            elif any(cl.inp.slopes or cl.out.slopes for cl in calls if cl.module == name) and \
                    sum(p.numel() for p in module.parameters(recurse=False)) > 1:
                raise ModelError(f"Layer '{name}' ({type(module).__name__}) has per-channel "
                                 f"parameters prunesearch cannot prune; list it in space.ignore.")
        probe_params = {d: (lost, dict(m.named_parameters()))
                        for d, (lost, m) in width_probes.items()}
        full: dict[tuple[int, int] | None, int] = {}  # per block, summed (all is linear)
        slopes: dict[tuple[int, int] | None, dict[int, int]] = {}
        for pname, p in model.named_parameters():
            owner = pname.rsplit(".", 1)[0] if "." in pname else ""
            if owner in modeled:
                continue
            block = blocks(pname)
            full[block] = full.get(block, 0) + p.numel()
            for d, (lost, params) in probe_params.items():
                delta = p.numel() - params[pname].numel()
                if delta % lost:
                    raise ModelError(f"Parameter '{pname}' does not shrink linearly with its "
                                     f"group; cannot count its cost.")
                if delta:
                    per_dim = slopes.setdefault(block, {})
                    per_dim[d] = per_dim.get(d, 0) + delta // lost
        terms = [_Parameters(block, n, tuple(sorted(slopes.get(block, {}).items())))
                 for block, n in full.items()]
        return cls(calls, modeled, terms, dims_full, depth_dims, density_dims)

    def _lost_and_kept(self, values: Sequence[float]) -> tuple[list[float], dict[int, float]]:
        lost = [self._full[d] - v for d, v in enumerate(values)]
        return lost, {d: values[d] for d in self._depth}

    def _density(self, call: _Call, values: Sequence[float]) -> float:
        d = self._density_dim.get(call.module)
        return 1.0 if d is None else values[d]

    def macs(self, values: Sequence[float]) -> int:
        """MACs of one example; a masked layer counts only its kept weights (sparse MACs)."""
        lost, kept = self._lost_and_kept(values)
        return sum(cl.ops(lost, self._density(cl, values)) for cl in self.calls
                   if cl.block is None or cl.block[1] < kept[cl.block[0]])

    def expected_macs(self, channels: dict[int, torch.Tensor],
                      block_kept: dict[int, torch.Tensor],
                      densities: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """MACs at expected channel counts (`channels[d]` for width dims) and expected
        densities (`densities[d]` for density dims; kept weights taken as density x weights,
        without rounding), each droppable block weighted by the probability that it is kept
        (`block_kept[d][b]`): differentiable in all, and equal to `macs` when every
        distribution is one-hot (up to the rounding of kept weights). A dimension not given
        stays full: all its channels, all its blocks, every weight."""
        densities = densities or {}
        lost = [self._full[d] - channels[d] if d in channels else 0
                for d in range(len(self._full))]
        total = torch.zeros(())
        for cl in self.calls:
            ops = cl.ops(lost)
            d = self._density_dim.get(cl.module)
            if d in densities:
                ops = ops - cl.weights(lost, 1.0) * cl.positions * (1 - densities[d])
            if cl.block is not None and cl.block[0] in block_kept:  # else the block stays
                ops = ops * block_kept[cl.block[0]][cl.block[1]]
            total = total + ops
        return total

    def call_channels(self, values: Sequence[float]) -> list[tuple[int, int, int]]:
        """(index in `calls`, input channels, output channels) of every call an arch keeps."""
        lost, kept = self._lost_and_kept(values)
        return [(i, cl.inp.channels(lost), cl.out.channels(lost))
                for i, cl in enumerate(self.calls)
                if cl.block is None or cl.block[1] < kept[cl.block[0]]]

    def params(self, values: Sequence[float]) -> int:
        """Parameters; a masked layer counts only its kept weights."""
        lost, kept = self._lost_and_kept(values)
        total = sum(t.full - sum(s * lost[d] for d, s in t.slopes) for t in self.other_params
                    if t.block is None or t.block[1] < kept[t.block[0]])
        return total + sum(cl.params(lost, self._density(cl, values))
                           for cl in self._param_calls
                           if cl.block is None or cl.block[1] < kept[cl.block[0]])
