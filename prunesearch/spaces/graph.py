"""Coupled channel groups of a model, found once with torch-pruning's DependencyGraph.

A group is a set of (module, in/out side, channel indices) that must be pruned together: the
convolutions feeding a residual add, a depthwise conv and its producer, a flatten feeding a
linear layer. Each group has `size` root channels; member indices map to root channels through
torch-pruning's `root_idxs`, so one root channel may map to many features (flatten).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from prunesearch.errors import ModelError


@dataclass(frozen=True)
class Member:
    """One module side of a group: `idxs[j]` of that side belongs to root channel `roots[j]`."""

    module: str
    side: str  # "out" (output channels, or a norm layer's features) or "in"
    idxs: tuple[int, ...]
    roots: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the root module's qualified name
    size: int
    members: tuple[Member, ...]


class ModelGraph:
    """The dependency graph of a model and its prunable channel groups, built once per run."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: list[str]) -> None:
        self.module_names = {m: n for n, m in model.named_modules()}
        unknown = [n for n in ignore if n not in dict(model.named_modules())]
        if unknown:
            raise ModelError(
                f"space.ignore names modules the model does not have: {unknown}. Use qualified "
                f"names as printed by `prunesearch space MODEL` (e.g. 'fc' or 'stages.0.0.conv1')."
            )
        self.output_layer = _last_weighted_layer(model, example_input)
        ignored = {dict(model.named_modules())[n] for n in ignore}
        ignored.add(dict(model.named_modules())[self.output_layer])
        model.eval()
        try:
            self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        except Exception as err:  # torch-pruning raises many kinds while tracing
            raise ModelError(
                f"torch-pruning could not trace the model ({type(err).__name__}: {err}). The "
                f"model's forward must run on the example input and use standard layers."
            ) from None
        self.tp_groups = list(self.dg.get_all_groups(
            ignored_layers=list(ignored), root_module_types=[nn.Conv2d, nn.Conv1d, nn.Linear]))
        self.groups = [self._describe(g) for g in self.tp_groups]

    def _describe(self, group: tp.Group) -> ChannelGroup:
        members = []
        root = group[0].dep.target.module
        for i, item in enumerate(group.items):
            name = self.module_names.get(item.dep.target.module)
            if name is None:
                continue  # torch-pruning's internal nodes (add, flatten, concat)
            side = "in" if item.dep.handler.__name__ == "prune_in_channels" else "out"
            members.append(Member(name, side, tuple(int(x) for x in item.idxs),
                                  tuple(int(r) for r in group[i].root_idxs)))
        size = len(group[0].idxs)
        return ChannelGroup(self.module_names[root], size, tuple(members))

    @torch.no_grad()
    def channel_order(self) -> dict[str, list[int]]:
        """Root channels of every group (by name), most important first: the group's L1 weight
        norm. This fixes which channels a width choice keeps, once per run."""
        importance = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
        order = {}
        for group, desc in zip(self.tp_groups, self.groups, strict=True):
            scores = importance(group)
            if scores is None or len(scores) != desc.size:
                order[desc.name] = list(range(desc.size))
            else:  # stable: equal scores keep channel order
                order[desc.name] = torch.argsort(-scores.float(), stable=True).tolist()
        return order


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
