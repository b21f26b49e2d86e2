"""Building a candidate as a real, physically smaller model by slicing the dense weights.

Per-layer surgery is a registry of small functions (`register_slicer`), one per layer type,
extensible for custom layers. Which indices a layer keeps comes from the channel groups and the
channel order fixed once per run, so slicing is only `index_select` on a copy of the model.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.spaces.arch import Arch, blocks_kept, layer_densities
from prunesearch.spaces.masks import apply_masks, magnitude_masks

if TYPE_CHECKING:
    from prunesearch.spaces.space import Space

Keep = torch.Tensor | None  # indices kept on one side; None keeps that side whole
SliceFn = Callable[[nn.Module, Keep, Keep], None]
_SLICERS: dict[type[nn.Module], SliceFn] = {}


def register_slicer(*types: type[nn.Module]) -> Callable[[SliceFn], SliceFn]:
    """Register `fn(module, keep_out, keep_in)` that slices a layer type in place."""

    def wrap(fn: SliceFn) -> SliceFn:
        for t in types:
            _SLICERS[t] = fn
        return fn

    return wrap


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.contiguous())


@register_slicer(nn.Conv1d, nn.Conv2d)
def _slice_conv(m: nn.Module, out: Keep, inn: Keep) -> None:
    if m.groups > 1:
        if not m.groups == m.in_channels == m.out_channels:
            raise ModelError(f"Grouped convolutions other than depthwise (in = out = groups) are "
                             f"not supported ({m}); list the module in space.ignore.")
        keep = out if out is not None else inn
        m.weight = _param(m.weight.data[keep])
        m.groups = m.in_channels = m.out_channels = len(keep)
    else:
        w = m.weight.data
        if out is not None:
            w = w[out]
            m.out_channels = len(out)
        if inn is not None:
            w = w[:, inn]
            m.in_channels = len(inn)
        m.weight = _param(w)
        keep = out
    if m.bias is not None and keep is not None:
        m.bias = _param(m.bias.data[keep])


@register_slicer(nn.Linear)
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


@register_slicer(nn.BatchNorm1d, nn.BatchNorm2d)
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


@register_slicer(nn.LayerNorm)
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


def _check_sliceable(name: str, m: nn.Module) -> None:
    if type(m) not in _SLICERS:
        raise ModelError(
            f"Layer '{name}' ({type(m).__name__}) shares pruned channels but prunesearch has no "
            f"slicer for its type; register one with prunesearch.spaces.register_slicer, or list "
            f"it in space.ignore."
        )


def _side_size(m: nn.Module, side: str) -> int:
    for attr in (("out_channels", "out_features", "num_features") if side == "out"
                 else ("in_channels", "in_features")):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    raise ModelError(f"Layer type {type(m).__name__} has no {side}put channel count to prune.")


class Slicer:
    """Materializes Archs of a Space from one dense model (which it never modifies)."""

    def __init__(self, space: Space, model: nn.Module,
                 order: Mapping[str, Sequence[int]]) -> None:
        self.space = space
        self.model = model
        modules = dict(model.named_modules())
        # removed[(dim index, choice)] -> {(module, side): indices that choice removes}
        self._removed: dict[tuple[int, int], dict[tuple[str, str], set[int]]] = {}
        for d, group in space.width_groups():
            for mem in group.members:
                _check_sliceable(mem.module, modules[mem.module])
            ranked = order[group.name]
            for choice in space.dims[d].choices:
                gone_roots = set(ranked[choice:])
                removed: dict[tuple[str, str], set[int]] = defaultdict(set)
                for mem in group.members:
                    removed[(mem.module, mem.side)].update(
                        i for i, r in zip(mem.idxs, mem.roots, strict=True) if r in gone_roots)
                self._removed[(d, choice)] = dict(removed)

    def build(self, arch: Arch) -> nn.Module:
        """A deep copy of the dense model, cut down to `arch` (same mode as the dense model),
        its masked layers' smallest weights zeroed."""
        genes = self.space.encode(arch)  # validates the arch
        sub = copy.deepcopy(self.model)
        truncate_depth(sub, blocks_kept(arch.to_dict()))
        removed: dict[tuple[str, str], set[int]] = defaultdict(set)
        for d, _ in self.space.width_groups():
            for key, idxs in self._removed[(d, self.space.dims[d].choices[genes[d]])].items():
                removed[key].update(idxs)
        modules = dict(sub.named_modules())
        per_module: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for (name, side), gone in removed.items():
            if gone and name in modules:
                size = _side_size(modules[name], side)
                per_module[name][side] = torch.tensor(
                    [i for i in range(size) if i not in gone], dtype=torch.long)
        for name, keeps in per_module.items():
            module = modules[name]
            _SLICERS[type(module)](module, keeps.get("out"), keeps.get("in"))
        apply_masks(sub, magnitude_masks(sub, layer_densities(arch.to_dict())))
        return sub


def truncate_depth(model: nn.Module, blocks_kept: Mapping[str, int]) -> None:
    """Keep the first k blocks of each named stage (an nn.Sequential), in place."""
    for stage, kept in blocks_kept.items():
        del model.get_submodule(stage)[kept:]


def shrink_to_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Resize the layers of a full-size skeleton (in place) to the shapes in a slim model's
    state_dict, so `load_state_dict` fits: how an exported model is rebuilt without the dense
    weights. Uses the same per-layer slicing functions as the search."""
    for name, module in model.named_modules():
        if type(module) not in _SLICERS:
            continue
        ref = state.get(f"{name}.weight", state.get(f"{name}.running_mean"))
        if ref is None:
            continue
        shape = ref.shape
        out = torch.arange(shape[0]) if shape[0] != _side_size(module, "out") else None
        inn = None
        depthwise = isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups > 1
        if len(shape) > 1 and not depthwise and shape[1] != _side_size(module, "in"):
            inn = torch.arange(shape[1])
        if out is not None or inn is not None:
            _SLICERS[type(module)](module, out, inn)
