"""Building a candidate as a real, physically smaller model by slicing the dense weights.

Per-layer surgery is the slicing function each layer type registers in `layers.py`
(`register_layer`, extensible for custom layers). Which indices a layer keeps comes from the
channel groups and the channel order fixed once per run, so slicing is only `index_select` on a
copy of the model.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.spaces.arch import Arch, Dimension, blocks_kept, layer_densities
from prunesearch.spaces.attention import resize_attention
from prunesearch.spaces.groups import ChannelGroup
from prunesearch.spaces.layers import side_size, slicer_for, weight_channels
from prunesearch.spaces.masks import apply_masks, magnitude_masks


class SlicedSpace(Protocol):
    """What a Slicer needs of its Space (kept structural so slicing does not import space)."""

    @property
    def dims(self) -> Sequence[Dimension]: ...

    def width_groups(self) -> list[tuple[int, ChannelGroup]]: ...

    def encode(self, arch: Arch) -> list[int]: ...


def _check_sliceable(name: str, m: nn.Module) -> None:
    if slicer_for(type(m)) is None:
        raise ModelError(
            f"Layer '{name}' ({type(m).__name__}) shares pruned channels but prunesearch has no "
            f"slicer for its type; register one with prunesearch.spaces.register_layer, or list "
            f"it in space.ignore."
        )


class Slicer:
    """Materializes Archs of a Space from one dense model (which it never modifies)."""

    def __init__(self, space: SlicedSpace, model: nn.Module,
                 order: Mapping[str, Sequence[int]]) -> None:
        self.space = space
        self.model = model
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        # removed[(dim index, choice)] -> {(module, side): indices that choice removes}
        self._removed: dict[tuple[int, int], dict[tuple[str, str], set[int]]] = {}
        for d, group in space.width_groups():
            for mem in group.members:
                if mem.module not in params:
                    _check_sliceable(mem.module, modules[mem.module])
            ranked = order[group.name]
            for choice in space.dims[d].choices:  # a tied dimension's groups add up
                gone_roots = set(ranked[choice:])
                removed = self._removed.setdefault((d, choice), defaultdict(set))
                for mem in group.members:
                    removed[(mem.module, mem.side)].update(
                        i for i, r in zip(mem.idxs, mem.roots, strict=True) if r in gone_roots)

    def build(self, arch: Arch) -> nn.Module:
        """A deep copy of the dense model, cut down to `arch` (same mode as the dense model),
        its masked layers' smallest weights zeroed."""
        genes = self.space.encode(arch)  # validates the arch
        sub = copy.deepcopy(self.model)
        truncate_depth(sub, blocks_kept(arch.to_dict()))
        removed: dict[tuple[str, str], set[int]] = defaultdict(set)
        for d in {d for d, _ in self.space.width_groups()}:
            for key, idxs in self._removed[(d, self.space.dims[d].choices[genes[d]])].items():
                removed[key].update(idxs)
        modules = dict(sub.named_modules())
        params = dict(sub.named_parameters())
        per_module: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for (name, side), gone in removed.items():
            if not gone:
                continue
            if name in params:  # a parameter member: its channels are its last axis
                size = params[name].shape[-1]
                slice_parameter(sub, name, _kept(size, gone))
            elif name in modules:
                per_module[name][side] = _kept(side_size(modules[name], side), gone)
        for name, keeps in per_module.items():
            module = modules[name]
            slicer_for(type(module))(module, keeps.get("out"), keeps.get("in"))
        resize_attention(sub)
        apply_masks(sub, magnitude_masks(sub, layer_densities(arch.to_dict())))
        return sub


def _kept(size: int, gone: set[int]) -> torch.Tensor:
    return torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)


def slice_parameter(model: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Keep `keep` along the last axis of the parameter `name` (one used outside any layer,
    such as a class token), in place."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    old = getattr(owner, attr)
    setattr(owner, attr, nn.Parameter(old.data.index_select(-1, keep.to(old.device)).clone(),
                                      requires_grad=old.requires_grad))


def truncate_depth(model: nn.Module, blocks_kept: Mapping[str, int]) -> None:
    """Keep the first k blocks of each named stage (an nn.Sequential), in place."""
    for stage, kept in blocks_kept.items():
        del model.get_submodule(stage)[kept:]


def shrink_to_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Resize the layers of a full-size skeleton (in place) to the shapes in a slim model's
    state_dict, so `load_state_dict` fits: how an exported model is rebuilt without the dense
    weights. Uses the same per-layer slicing functions as the search."""
    for name, module in model.named_modules():
        slice_fn = slicer_for(type(module))
        if slice_fn is None:
            continue
        ref = state.get(f"{name}.weight", state.get(f"{name}.running_mean"))
        if ref is None:
            continue
        shape = weight_channels(module, tuple(ref.shape))
        if isinstance(module, nn.Embedding):  # its channels are the table's columns
            shape = (shape[1],)
        out = torch.arange(shape[0]) if shape[0] != side_size(module, "out") else None
        inn = None
        grouped = isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups > 1
        if len(shape) > 1 and not grouped and shape[1] != side_size(module, "in"):
            inn = torch.arange(shape[1])
        if out is not None or inn is not None:
            slice_fn(module, out, inn)
    for name, param in list(model.named_parameters()):  # parameter members (class tokens)
        owner = model.get_submodule(name.rpartition(".")[0])
        ref = state.get(name)
        if slicer_for(type(owner)) is None and ref is not None and ref.shape != param.shape \
                and ref.shape[:-1] == param.shape[:-1]:
            slice_parameter(model, name, torch.arange(ref.shape[-1]))
    resize_attention(model)
