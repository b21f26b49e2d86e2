"""What prunesearch knows about each layer type, in one registry: how the analytic cost model
counts it and, when its channels can be pruned, how it is sliced.

`register_layer(*types, cost=..., slicer=...)` adds a type (custom layers too). Lookup is by
exact type, as in torch-pruning's op counter, whose rule each cost kind follows:

- "conv", "linear": multiply-adds of the (kept) weights, plus bias;
- "norm", "layernorm": one op per input element, two with an affine transform;
- "act": one op per output element; "pool": one op per input element;
- "embedding": no ops (a lookup; torch-pruning counts none), its table as parameters;
- "rmsnorm": no ops (torch-pruning's counter has no rule for RMS norms), its scale as
  parameters;
- "opaque": recurrent layers and nn.MultiheadAttention, which torch-pruning counts by rules of
  their own: counted by that rule on the dense call, a constant, since they are never cut (no
  slicer: a coupling through one stays whole).

A slicer `fn(module, keep_out, keep_in)` cuts one module in place to the kept indices of its
output and input channels (None keeps that side whole).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn
from torch_pruning.utils import op_counter

from prunesearch.errors import ModelError

CostKind = Literal["conv", "linear", "norm", "layernorm", "act", "pool", "embedding", "rmsnorm",
                   "opaque"]
Keep = torch.Tensor | None  # indices kept on one side; None keeps that side whole
SliceFn = Callable[[nn.Module, Keep, Keep], None]


@dataclass(frozen=True)
class _Layer:
    cost: CostKind
    slicer: SliceFn | None


_LAYERS: dict[type[nn.Module], _Layer] = {}


def register_layer(*types: type[nn.Module], cost: CostKind,
                   slicer: SliceFn | None = None) -> None:
    """Register layer types counted by the `cost` rule and, when their channels can be pruned,
    cut by `slicer(module, keep_out, keep_in)`. A type is registered once."""
    if cost not in get_args(CostKind):
        raise ValueError(f"Unknown cost kind {cost!r}; one of {get_args(CostKind)}.")
    for t in types:
        if t in _LAYERS:
            raise ValueError(f"Layer type {t.__name__} is already registered.")
    for t in types:
        _LAYERS[t] = _Layer(cost, slicer)


def slicer_for(t: type[nn.Module]) -> SliceFn | None:
    """The slicing function of a layer type; None if its channels cannot be pruned."""
    layer = _LAYERS.get(t)
    return None if layer is None else layer.slicer


def cost_kind(t: type[nn.Module]) -> CostKind | None:
    """How a layer type is counted; None for types torch-pruning's counter ignores too."""
    layer = _LAYERS.get(t)
    if layer is not None:
        return layer.cost
    if t in op_counter.MODULES_MAPPING:  # counted by torch-pruning, but by no rule of ours
        raise ModelError(
            f"prunesearch cannot count the cost of {t.__name__} layers analytically "
            f"yet; supported: convolutions, linear, batch/layer norm, activations, pooling."
        )
    return None


def channels_last(kind: CostKind) -> bool:
    """True when a layer of this cost kind holds its channels on the last axis of its input
    and output (linear layers, layer and RMS norms, embeddings); the others on axis 1."""
    return kind in ("linear", "layernorm", "embedding", "rmsnorm", "opaque")


def side_size(m: nn.Module, side: str) -> int:
    """Channel count of a layer's "out" or "in" side."""
    for attr in (("out_channels", "out_features", "num_features", "embedding_dim")
                 if side == "out"
                 else ("in_channels", "in_features")):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, nn.LayerNorm | nn.RMSNorm):
        return int(m.normalized_shape[-1])
    weight = getattr(m, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:  # a norm's per-channel scale
        return int(weight.shape[0])
    raise ModelError(f"Layer type {type(m).__name__} has no {side}put channel count to prune.")


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.contiguous())


def _slice_conv(m: nn.Module, out: Keep, inn: Keep) -> None:
    """A convolution's weight is (out, in / groups, *kernel); a transposed one's (in,
    out / groups, *kernel): the sides swap."""
    if m.groups > 1:
        if m.transposed:
            raise ModelError(f"A grouped transposed convolution cannot be pruned ({m}); list "
                             f"the module in space.ignore.")
        _slice_grouped_conv(m, out, inn)
        return
    rows, cols = (inn, out) if m.transposed else (out, inn)
    w = m.weight.data
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    m.weight = _param(w)
    if out is not None:
        m.out_channels = len(out)
        if m.bias is not None:
            m.bias = _param(m.bias.data[out])
    if inn is not None:
        m.in_channels = len(inn)


def weight_channels(m: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A weight's shape with its output channels first, then its inputs (a transposed
    convolution stores them the other way round)."""
    if isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d) and len(shape) > 1:
        return (shape[1], shape[0], *shape[2:])
    return shape


def _kept_units(keep: torch.Tensor, per: int, m: nn.Module) -> torch.Tensor:
    units = torch.unique(keep // per)
    if len(keep) != len(units) * per or not torch.equal(
            torch.sort(keep).values, (units[:, None] * per + torch.arange(per)).flatten()):
        raise ModelError(f"A grouped convolution or group norm can only lose whole groups, but "
                         f"the channels kept split one ({m}); list the module in space.ignore.")
    return units


def _slice_grouped_conv(m: nn.Module, out: Keep, inn: Keep) -> None:
    """Keep whole groups: the kept output channels name the groups, whose input channels go
    with them (a depthwise conv is the case of one channel per group on each side)."""
    per_out, per_in = m.out_channels // m.groups, m.in_channels // m.groups
    by_out = None if out is None else _kept_units(out, per_out, m)
    by_in = None if inn is None else _kept_units(inn, per_in, m)
    if by_out is not None and by_in is not None and not torch.equal(by_out, by_in):
        raise ModelError(f"A grouped convolution's kept input and output channels belong to "
                         f"different groups ({m}); list the module in space.ignore.")
    units = by_out if by_out is not None else by_in
    if units is None:
        return
    keep = (units[:, None] * per_out + torch.arange(per_out)).flatten()
    m.weight = _param(m.weight.data[keep])
    if m.bias is not None:
        m.bias = _param(m.bias.data[keep])
    m.groups = len(units)
    m.in_channels, m.out_channels = len(units) * per_in, len(units) * per_out


def _slice_linear(m: nn.Module, out: Keep, inn: Keep) -> None:
    w = m.weight.data
    if out is not None:
        w = w[out]
        m.out_features = len(out)
        if m.bias is not None:
            m.bias = _param(m.bias.data[out])
    if inn is not None:
        w = w[:, inn]
        m.in_features = len(inn)
    m.weight = _param(w)


def _slice_embedding(m: nn.Module, out: Keep, inn: Keep) -> None:
    """An embedding's channels are its vectors' entries (the table's columns)."""
    if out is not None:
        m.weight = _param(m.weight.data[:, out])
        m.embedding_dim = len(out)


def slice_scale_norm(m: nn.Module, out: Keep, inn: Keep) -> None:
    """A norm over the last axis with only a per-channel `weight` (RMS norms)."""
    out = out if out is not None else inn
    if out is None:
        return
    if getattr(m, "weight", None) is not None:
        m.weight = _param(m.weight.data[out])
    if hasattr(m, "normalized_shape"):
        m.normalized_shape = (len(out),)


def _slice_batchnorm(m: nn.Module, out: Keep, inn: Keep) -> None:
    out = out if out is not None else inn  # a norm layer has one channel axis
    if out is None:
        return
    if m.affine:
        m.weight = _param(m.weight.data[out])
        m.bias = _param(m.bias.data[out])
    if m.running_mean is not None:
        m.running_mean = m.running_mean[out].clone()
        m.running_var = m.running_var[out].clone()
    m.num_features = len(out)


def _slice_groupnorm(m: nn.Module, out: Keep, inn: Keep) -> None:
    """Whole groups only: the kept groups' statistics are then what they were."""
    out = out if out is not None else inn
    if out is None:
        return
    units = _kept_units(out, m.num_channels // m.num_groups, m)
    if m.affine:
        m.weight = _param(m.weight.data[out])
        m.bias = _param(m.bias.data[out])
    m.num_groups, m.num_channels = len(units), len(out)


def _slice_layernorm(m: nn.Module, out: Keep, inn: Keep) -> None:
    out = out if out is not None else inn
    if out is None:
        return
    if len(m.normalized_shape) != 1:
        raise ModelError(f"LayerNorm over several dimensions cannot be pruned ({m}).")
    if m.elementwise_affine:
        m.weight = _param(m.weight.data[out])
        if m.bias is not None:
            m.bias = _param(m.bias.data[out])
    m.normalized_shape = (len(out),)


# The built-ins: every type torch-pruning's counter handles with one of the rules above
# A transposed convolution costs what a convolution with its kernel, channels and output
# positions does; upsampling one op per output element, as an activation.
register_layer(nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, cost="conv",
               slicer=_slice_conv)
register_layer(nn.Conv3d, nn.ConvTranspose3d, cost="conv")
register_layer(nn.Linear, cost="linear", slicer=_slice_linear)
register_layer(nn.BatchNorm1d, nn.BatchNorm2d, cost="norm", slicer=_slice_batchnorm)
register_layer(nn.GroupNorm, cost="norm", slicer=_slice_groupnorm)
register_layer(nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
               cost="norm")
register_layer(nn.LayerNorm, cost="layernorm", slicer=_slice_layernorm)
register_layer(nn.Embedding, cost="embedding", slicer=_slice_embedding)
register_layer(nn.RMSNorm, cost="rmsnorm", slicer=slice_scale_norm)
register_layer(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.Upsample,
               cost="act")
register_layer(nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell,
               nn.MultiheadAttention, cost="opaque")
register_layer(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, cost="pool")
