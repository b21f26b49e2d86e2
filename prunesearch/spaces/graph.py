"""Coupled channel groups of a model, found once with torch-pruning's DependencyGraph.

A group is a set of (module, in/out side, channel indices) that must be pruned together: the
convolutions feeding a residual add, a depthwise conv and its producer, a flatten feeding a
linear layer. Each group has `size` root channels; member indices map to root channels through
torch-pruning's `root_idxs`, so one root channel may map to many features (flatten).

Attention modules registered in `attention.py` add one group each, over whole heads.

A parameter used outside any layer (a ViT's class token and position table) is a member of the
group its last axis joins, named by its qualified parameter name; torch-pruning finds such
parameters itself. A group holding one that would be pruned along another axis is not searched.

A grouped convolution (1 < groups, not depthwise) is pruned by whole groups: torch-pruning
keeps its input and output channels in two separate groups, which are joined here into one whose
"root channels" are the convolution's groups (units), each member index mapped to the unit its
channel belongs to. A GroupNorm is pruned by whole groups the same way (its group's root
channels become its norm groups), so the kept groups' statistics do not change. Where that
cannot be done consistently (one side unprunable, two grouped layers with different group
counts in one coupling), the groups involved stay whole.
"""

from __future__ import annotations

import warnings

import torch
import torch_pruning as tp
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.spaces.attention import Heads, find_heads
from prunesearch.spaces.groups import ChannelGroup, Member
from prunesearch.spaces.layers import cost_kind, side_size, slicer_for

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.ConvTranspose1d, nn.Linear)


class ModelGraph:
    """The dependency graph of a model and its prunable channel groups, built once per run."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: list[str]) -> None:
        self._modules = dict(model.named_modules())
        self.module_names = {m: n for n, m in self._modules.items()}
        self._param_names = {id(p): n for n, p in model.named_parameters()}
        unknown = [n for n in ignore if n not in self._modules]
        if unknown:
            raise ModelError(
                f"space.ignore names modules the model does not have: {unknown}. Use qualified "
                f"names as printed by `prunesearch space MODEL` (e.g. 'fc' or 'stages.0.0.conv1')."
            )
        self.output_layer = _last_weighted_layer(model, example_input)
        ignored = {self._modules[n] for n in ignore}
        ignored.add(self._modules[self.output_layer])
        _register_library_layers(model)
        heads = find_heads(model, set(ignore) | {self.output_layer})
        for h in heads:  # their output channels are heads, not torch-pruning groups
            ignored.update(self._modules[p] for p in h.projections[:3])
        model.eval()
        # (group's root layer, why) for torch-pruning's groups no slicer may cut
        self.kept_whole: list[tuple[str, str]] = []
        # per final group: (torch-pruning group index, root channel -> unit or None: identity)
        # or the attention module whose heads it is
        self._parts: list[list[tuple[int, dict[int, int] | None]] | Heads] = []
        self.groups: list[ChannelGroup] = []
        self.tp_groups: list[tp.Group] = []
        traced = _trace(model, example_input)
        if isinstance(traced, str):  # no channel group: depth and densities may remain
            self.kept_whole.append(("(every channel coupling)", traced))
            return
        self.dg = traced
        self.tp_groups = self._all_groups(ignored)
        last_axis = {id(u.parameters) for u in self.dg.unwrapped_parameters
                     if u.pruning_dim in (-1, u.parameters.dim() - 1)}
        described: list[ChannelGroup | None] = []
        for g in self.tp_groups:
            group = self._describe(g, last_axis)
            if isinstance(group, str):
                self.kept_whole.append((self.module_names[g[0].dep.target.module], group))
            described.append(group if isinstance(group, ChannelGroup) else None)
        for group, parts in _join_grouped_convs(model, described):
            self.groups.append(group)
            self._parts.append(parts)
        for h in heads:
            self.groups.append(h.group())
            self._parts.append(h)

    def _all_groups(self, ignored: set[nn.Module]) -> list[tp.Group]:
        """torch-pruning's groups rooted at each conv/linear layer's output channels, as its
        `get_all_groups` makes them, except that a root whose coupling torch-pruning fails to
        follow (it raises, e.g. past a recurrent layer reading flattened channels) is kept
        whole, with the reason, instead of failing the model."""
        ignored = ignored | set(self.dg.IGNORED_LAYERS_IN_TRACING)
        groups, visited = [], set()
        for m in list(self.dg.module2node):
            if m in ignored or m in visited or not isinstance(m, ROOT_TYPES):
                continue
            pruner = self.dg.get_pruner_of_module(m)
            channels = None if pruner is None else pruner.get_out_channels(m)
            if channels is None:
                continue
            try:
                group = self.dg.get_pruning_group(m, pruner.prune_out_channels,
                                                  list(range(channels)))
            except Exception as err:  # torch-pruning raises many kinds
                visited.add(m)
                self.kept_whole.append((self.module_names[m], (
                    f"torch-pruning cannot follow its coupling ({type(err).__name__}: "
                    f"{' '.join(str(err).split())[:120]})")))
                continue
            outs = [dep.target.module for dep, _ in group
                    if self.dg.is_out_channel_pruning_fn(dep.handler)]
            visited.update(outs)
            if not ignored.intersection(outs):
                groups.append(group)
        return groups

    def _describe(self, group: tp.Group, last_axis: set[int]) -> ChannelGroup | str:
        """The group as members; why it cannot be cut when it holds a parameter pruned along
        another axis than its last (a slicer would cut the wrong one) or channels torch-pruning
        maps to no root channel."""
        members = []
        root = group[0].dep.target.module
        for i, item in enumerate(group.items):
            target = item.dep.target.module
            if isinstance(target, nn.Parameter):
                name = self._param_names[id(target)]
                if id(target) not in last_axis:
                    return f"it holds the parameter {name} along another axis than its last"
            else:
                name = self.module_names.get(target)
            if name is None:
                continue  # torch-pruning's internal nodes (add, flatten, concat)
            side = "in" if item.dep.handler.__name__ == "prune_in_channels" else "out"
            if any(r is None for r in group[i].root_idxs):
                return (f"torch-pruning maps channels of {name} to no channel of the group "
                        f"(a repeat or expand between them, as grouped-query attention "
                        f"repeats its key/value heads); register the attention module "
                        f"(prunesearch.spaces.attention.register_attention) to search its heads")
            members.append(Member(name, side, tuple(int(x) for x in item.idxs),
                                  tuple(int(r) for r in group[i].root_idxs)))
        size = len(group[0].idxs)
        return ChannelGroup(self.module_names[root], size, tuple(members))

    @torch.no_grad()
    def channel_order(self, taylor: bool = False) -> dict[str, list[int]]:
        """Root channels of every group (by name), most important first: the group's L1 weight
        norm, or with `taylor` its first-order Taylor score |weight x gradient| (the model's
        parameters must hold gradients). This fixes which channels a width choice keeps, once
        per run."""
        importance = tp.importance.GroupTaylorImportance(normalizer=None) if taylor else \
            tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
        scores = {}
        for i in {i for parts in self._parts if not isinstance(parts, Heads) for i, _ in parts}:
            try:
                s = importance(self.tp_groups[i])
            except (IndexError, RuntimeError):  # a coupling torch-pruning got wrong (a
                s = None  # shuffle): kept whole by the space, its order does not matter
            scores[i] = None if s is None or len(s) != len(self.tp_groups[i][0].idxs) \
                else s.float()
        order = {}
        for desc, parts in zip(self.groups, self._parts, strict=True):
            if isinstance(parts, Heads):
                order[desc.name] = torch.argsort(-parts.importance(self._modules, taylor),
                                                 stable=True).tolist()
                continue
            total = torch.zeros(desc.size)
            for i, units in parts:
                if scores[i] is None:
                    continue
                if units is None:
                    total += scores[i]
                else:  # a grouped conv's unit: its channels' scores, each side weighed alike
                    side = scores[i] / scores[i].mean().clamp_min(1e-12)
                    for root, unit in units.items():
                        total[unit] += side[root]
            # stable: equal scores (or none known) keep channel order
            order[desc.name] = torch.argsort(-total, stable=True).tolist()
        return order


class _OutputTensors(nn.Module):
    """A model whose output is the tensors of the wrapped model's, as a tuple: torch-pruning's
    tracer walks tuples, lists and dicts only (same modules, so the same names)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_tensors(self.model(x)))


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    elif not isinstance(out, list | tuple):
        out = list(vars(out).values()) if hasattr(out, "__dict__") else []
    return [t for item in out for t in _tensors(item)]


def _trace(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph | str:
    """torch-pruning's dependency graph of `model`; where its tracer fails, the graph of the
    model with its output's tensors as a tuple (an output object it cannot walk); the reason
    when that fails too (the Space then has no width dimension)."""
    failures = []
    for traced in (model, _OutputTensors(model)):
        try:
            with warnings.catch_warnings():  # parameter members are handled (_describe)
                warnings.filterwarnings("ignore", "Unwrapped parameters detected")
                return tp.DependencyGraph().build_dependency(
                    traced, example_inputs=example, customized_pruners=_norm_pruners(model))
        except Exception as err:  # torch-pruning raises many kinds while tracing
            failures.append(f"{type(err).__name__}: {' '.join(str(err).split())[:160]}")
    return (f"torch-pruning could not trace the model ({failures[0]}; with its output's "
            f"tensors as a tuple: {failures[1]}), so no channel is cut; depth and weight "
            f"densities are searched where the space has them")


def _register_library_layers(model: nn.Module) -> None:
    """Hugging Face layers (attention, RMS norms) are registered by prunesearch.spaces.hf,
    imported only for a model that holds one (importing transformers takes seconds)."""
    if any(type(m).__module__.startswith("transformers.") for m in model.modules()):
        import prunesearch.spaces.hf  # noqa: F401


class _ScaleNormPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's view of a registered RMS norm it has no pruner for: one channel axis,
    input and output channels the same (one function for both couples them), cut by the
    layer's registered slicer."""

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        gone = set(idxs)
        keep = torch.tensor([i for i in range(side_size(layer, "out")) if i not in gone])
        slicer_for(type(layer))(layer, keep, None)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return side_size(layer, "out")

    get_in_channels = get_out_channels


def _norm_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.function.BasePruningFunc]:
    """Pruners for the model's RMS-norm layer types (registered in layers.py) that torch-pruning
    does not know, so its graph couples them with the channels they normalize."""
    return {type(m): _ScaleNormPruner() for m in model.modules()
            if cost_kind(type(m)) == "rmsnorm"
            and tp.ops.module2type(m) == tp.ops.OPTYPE.ELEMENTWISE}


def _unit_sides(m: nn.Module) -> tuple[int, dict[str, int]] | None:
    """A layer pruned by whole groups: (its group count, channels per side). A grouped
    convolution, but not a depthwise one (in = out = groups), which torch-pruning already
    couples channel by channel; a GroupNorm with more than one channel per group (one channel
    axis, which torch-pruning names as its output)."""
    if isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups > 1 and not (
            m.groups == m.in_channels == m.out_channels):
        return m.groups, {"in": m.in_channels, "out": m.out_channels}
    if isinstance(m, nn.GroupNorm) and m.num_groups < m.num_channels:
        return m.num_groups, {"out": m.num_channels}
    return None


def _join_grouped_convs(model: nn.Module, groups: list[ChannelGroup | None]
                        ) -> list[tuple[ChannelGroup, list[tuple[int, dict[int, int] | None]]]]:
    """The groups to search: torch-pruning's groups but those described as None, except that
    the two groups holding a grouped convolution's input and output channels become one group
    over its conv groups (see the module docstring). Each comes with its parts: (index in
    `groups`, root -> unit)."""
    where = {(m.module, m.side): i for i, g in enumerate(groups) if g is not None
             for m in g.members}
    parent = list(range(len(groups)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    units: dict[int, list[dict[int, int]]] = {}  # group index -> each conv's root -> unit map
    count: dict[int, set[int]] = {}  # group index -> the conv group counts seen on it
    frozen: set[int] = set()
    for name, m in model.named_modules():
        if (unit := _unit_sides(m)) is None:
            continue
        n_units, channels = unit
        sides = [(where.get((name, side)), side, size // n_units)
                 for side, size in channels.items()]
        found = [i for i, _, _ in sides if i is not None]
        if len(found) < len(sides):  # one side cannot be pruned: neither can the other
            frozen.update(found)
            continue
        parent[find(found[0])] = find(found[-1])
        for i, side, per in sides:
            member = next(x for x in groups[i].members if (x.module, x.side) == (name, side))
            units.setdefault(i, []).append(
                {r: idx // per for idx, r in zip(member.idxs, member.roots, strict=True)})
            count.setdefault(i, set()).add(n_units)
    components: dict[int, list[int]] = {}
    for i in units:
        components.setdefault(find(i), []).append(i)
    for members in components.values():
        maps = {i: units[i][0] for i in members}
        consistent = all(all(u == maps[i] for u in units[i]) and
                         set(maps[i]) == set(range(groups[i].size)) for i in members)
        if not consistent or len(set().union(*(count[i] for i in members))) != 1 or \
                frozen.intersection(members):
            frozen.update(members)
    joined = {i for members in components.values() for i in members}
    out = []
    for i, group in enumerate(groups):
        if group is None or i in frozen or (i in joined and find(i) != i):
            continue  # stays whole, or is part of a joined group (emitted at its root)
        if i not in joined:
            out.append((group, [(i, None)]))
            continue
        parts = sorted(components[i])
        maps = {j: units[j][0] for j in parts}
        name, layer = next((n, m) for n, m in model.named_modules()
                           if _unit_sides(m) is not None
                           and any(x.module == n for j in parts for x in groups[j].members))
        members = tuple(Member(x.module, x.side, x.idxs, tuple(maps[j][r] for r in x.roots))
                        for j in parts for x in groups[j].members)
        size = next(iter(count[i]))
        unit = "norm groups" if isinstance(layer, nn.GroupNorm) else "conv groups"
        out.append((ChannelGroup(name, size, members, unit), [(j, maps[j]) for j in parts]))
    return out


def _last_weighted_layer(model: nn.Module, example_input: torch.Tensor) -> str:
    """The conv/linear layer run last in forward: the classifier, whose outputs are not pruned."""
    order: list[str] = []
    weighted = [(n, m) for n, m in model.named_modules()
                if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)]
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
               for n, m in weighted]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    except Exception as err:
        raise ModelError(
            f"The model's forward fails on an example input of shape "
            f"{tuple(example_input.shape)} ({type(err).__name__}: {err}). Check that the model "
            f"matches the dataset's input shape and number of classes."
        ) from None
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ModelError("The model has no Conv1d/Conv2d/Linear layer: nothing to prune.")
    return order[-1]
