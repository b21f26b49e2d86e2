"""A search space built from any model: width dimensions per coupled channel group, depth
dimensions per stage of droppable blocks, density dimensions per conv/linear layer, and
analytic costs of every Arch.

With `layer_uniform`, the groups that are one kind repeated in every layer (names equal but
for their layer numbers, the same size: every layer's attention heads, every layer's MLP)
share one width dimension, named by the pattern (`width:model.layers.*.mlp.gate_proj`): one
choice per kind for all layers, the shape a Hugging Face config can hold (`--format hf`)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from prunesearch.errors import ModelError, UserError
from prunesearch.spaces.arch import (
    DENSITY_PREFIX,
    DEPTH_PREFIX,
    WIDTH_PREFIX,
    Arch,
    Dimension,
    Value,
)
from prunesearch.spaces.cost import CostModel
from prunesearch.spaces.graph import ModelGraph
from prunesearch.spaces.groups import ChannelGroup
from prunesearch.spaces.masks import kept_weights, maskable_layers
from prunesearch.spaces.slicing import Slicer
from prunesearch.spaces.supernet import Supernet

DEFAULT_WIDTH_RATIOS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
# A weight-density grid from dense down to 2% of a layer's weights, finer where it matters.
DEFAULT_DENSITIES = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def width_choices(size: int, ratios: Sequence[float], round_to: int = 1) -> tuple[int, ...]:
    """Channel counts of a group for the ratio grid; never below 1, the full width always in.
    With `round_to` N > 1 every count is the nearest multiple of N (at least N, at most the
    full width): hardware runs such widths faster than odd ones."""
    def rounded(count: int) -> int:
        return min(size, max(round_to, round_to * round(count / round_to)))

    return tuple(sorted({rounded(max(1, round(r * size))) for r in ratios} | {size}))


def _splits_branches(group: ChannelGroup) -> bool:
    """True when the group couples concatenated branches (a concat feeding a depthwise conv or
    a residual add): a layer producing only part of the channels. Which part a width keeps
    would then depend on the weights, so such groups stay at full width (a known limit)."""
    return any(m.side == "out" and len(set(m.roots)) < group.size for m in group.members)


def _forward(model: nn.Module, example: torch.Tensor) -> Any:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(example)
    finally:
        model.train(was_training)


def _output_shapes(output: Any) -> Any:
    """The shapes of every tensor in a model's output (a tensor, a tuple, a dict or a
    Hugging Face ModelOutput), in its structure."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, dict):
        return {k: _output_shapes(v) for k, v in output.items()}
    if isinstance(output, list | tuple):
        return [_output_shapes(v) for v in output]
    return type(output).__name__


class Space:
    """Ordered dimensions over a reference model: sample, encode/decode, costs, slicing."""

    def __init__(self, dims: Sequence[Dimension],
                 groups: Sequence[ChannelGroup | Sequence[ChannelGroup] | None],
                 stages: Sequence[str | None], graph: ModelGraph, example: torch.Tensor) -> None:
        self.dims = tuple(dims)
        # per dimension, the channel groups it cuts (several when layer_uniform ties them)
        self._groups = [[] if g is None else [g] if isinstance(g, ChannelGroup) else list(g)
                        for g in groups]
        self._stages = list(stages)
        self._layers = [d.name[len(DENSITY_PREFIX):] if d.kind == "density" else None
                        for d in self.dims]
        self.graph = graph
        self.example = example
        self.cost: CostModel | None = None
        self.layer_weights: dict[str, int] = {}  # weights of each masked layer, dense model
        self.width_ratios: tuple[float, ...] = DEFAULT_WIDTH_RATIOS  # what from_model was given
        self._names = [d.name for d in self.dims]
        self._order: dict[str, list[int]] | None = None
        # (channel group, why) for the couplings from_model keeps at full width
        self.kept_whole: list[tuple[str, str]] = []

    @classmethod
    def from_model(cls, model: nn.Module, example_input: torch.Tensor,
                   width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS, depth: bool = True,
                   ignore: Sequence[str] = (), densities: Sequence[float] = (),
                   round_to: int = 1, layer_uniform: bool = False) -> Space:
        """Find the coupled channel groups (torch-pruning's DependencyGraph) of `model`, make
        one width dimension per group (per kind of group with `layer_uniform`, see the module
        docstring), when the model offers `depth_stages()` one depth dimension per stage, and
        given `densities` one density dimension per conv/linear layer; then probe the model
        once for the analytic cost model. `round_to`: channel counts in multiples of it (see
        `width_choices`)."""
        example = example_input[:1]
        graph = ModelGraph(model, example, list(ignore))
        dims: list[Dimension] = []
        groups: list[ChannelGroup | list[ChannelGroup] | None] = []
        stages: list[str | None] = []
        kept_whole: list[tuple[str, str]] = list(graph.kept_whole)
        narrowest: dict[str, nn.Module] = {}  # each searched group alone cut to its narrowest
        dense_output = _output_shapes(_forward(model, example))
        for group in graph.groups:
            choices = width_choices(group.size, width_ratios, round_to)
            if len(choices) == 1:
                continue
            dim = Dimension(WIDTH_PREFIX + group.name, "width", choices, group.size)
            if _splits_branches(group):
                reason: str | None = ("it couples concatenated branches: which part a width "
                                      "keeps would depend on the weights")
            else:
                alone = cls([dim], [group], [None], graph, example)
                reason, cut = alone._cut_breaks(model, dense_output)
                if cut is not None:
                    narrowest[group.name] = cut
            if reason is not None:
                kept_whole.append((group.name, reason))
                continue
            dims.append(dim)
            groups.append(group)
            stages.append(None)
        if layer_uniform:
            dims, groups = _tied(dims, groups)
            stages = [None] * len(dims)
        if depth and hasattr(model, "depth_stages"):
            for name, stage in model.depth_stages():
                if len(stage) > 1:
                    dims.append(Dimension(DEPTH_PREFIX + name, "depth",
                                          tuple(range(1, len(stage) + 1)), len(stage)))
                    groups.append(None)
                    stages.append(name)
        density_choices = tuple(sorted({float(d) for d in densities} | {1.0}))
        if len(density_choices) > 1:
            for layer in maskable_layers(model, set(ignore)):
                dims.append(Dimension(DENSITY_PREFIX + layer, "density", density_choices, 1.0))
                groups.append(None)
                stages.append(None)
        if not dims:
            whole = "".join(f" {name} is kept whole: {why}" + ("" if why.endswith(".") else ".")
                            for name, why in kept_whole)
            raise ModelError("The model has no prunable channel group, droppable block or "
                             "masked layer; nothing to search. Check space.ignore, "
                             f"space.width_ratios and space.densities.{whole}")
        space = cls(dims, groups, stages, graph, example)
        space.kept_whole = kept_whole
        space.width_ratios = tuple(width_ratios)
        space.cost = space._probe_costs(model, narrowest)
        modules = dict(model.named_modules())
        space.layer_weights = {layer: modules[layer].weight.numel()
                               for _, layer in space.density_layers()}
        return space

    def _cut_breaks(self, model: nn.Module, dense_output: Any
                    ) -> tuple[str | None, nn.Module | None]:
        """(why, None) when cutting this one-group space's group to its narrowest width breaks
        `model` (torch-pruning coupled it wrongly: channel shuffles, splits of concatenations,
        ...); (None, the cut network) when it runs, its output keeps the dense model's shapes
        and values with those channels zeroed (the cost model then probes that network)."""
        group, = self._groups[0]
        order = {group.name: list(range(group.size))}
        try:
            cut = Slicer(self, model, order).build(self.smallest())
            sliced = _forward(cut, self.example)
            shapes = _output_shapes(sliced)
            masked = Supernet(self, model, order, hard=True)
            masked.sample = {0: [(0, torch.tensor(1.0))]}
            zeroed = _forward(masked, self.example)
        except UserError as err:  # ours says what to do (register_layer, ...)
            return str(err), None
        except Exception as err:  # any failure of the cut network: the group stays whole
            return (f"cut to {self.dims[0].choices[0]} channels the network fails "
                    f"({type(err).__name__}: {' '.join(str(err).split())[:160]})"), None
        if shapes != dense_output:
            return (f"cut, the network's output changes shape ({shapes} for "
                    f"{dense_output})"), None
        if isinstance(sliced, torch.Tensor) and not torch.allclose(sliced, zeroed, rtol=1e-4,
                                                                   atol=1e-4):
            return ("cut, the network computes something else than the dense one with those "
                    "channels zeroed (torch-pruning coupled channels that do not go "
                    "together)"), None
        return None, cut

    def _probe_costs(self, model: nn.Module, narrowest: dict[str, nn.Module]) -> CostModel:
        """The cost model, probed on `narrowest[group]`: the model with only that group cut to
        its narrowest width (built once, by `_cut_breaks`); a dimension of tied groups on the
        model with all of them cut."""
        probes = {}
        slicer = None  # one for every tied dimension
        for d, tied in enumerate(self._groups):
            if not tied:
                continue
            dim = self.dims[d]
            if len(tied) == 1:
                cut = narrowest[tied[0].name]
            else:
                slicer = slicer or Slicer(self, model, {g.name: list(range(g.size))
                                                        for _, g in self.width_groups()})
                cut = slicer.build(self.decode(
                    [0 if i == d else len(x.choices) - 1 for i, x in enumerate(self.dims)]))
            probes[d] = (dim.full - dim.choices[0], cut)
        return CostModel.probe(model, self.example, probes, self._block_of,
                               [d.full for d in self.dims],
                               [d for d, _ in self.depth_stages()],
                               {layer: d for d, layer in self.density_layers()})

    def _block_of(self, name: str) -> tuple[int, int] | None:
        for d, stage in self.depth_stages():
            if name.startswith(stage + "."):
                head = name[len(stage) + 1:].split(".", 1)[0]
                if head.isdigit():
                    return d, int(head)
        return None

    # --- structure -------------------------------------------------------------------------
    def width_groups(self) -> list[tuple[int, ChannelGroup]]:
        """(dimension, channel group) pairs: one per group, several per tied dimension."""
        return [(d, g) for d, tied in enumerate(self._groups) for g in tied]

    def unit(self, d: int) -> str:
        """What dimension `d` counts: channels, conv groups, heads, key/value heads, blocks, or
        weight density."""
        dim = self.dims[d]
        if dim.kind == "width":
            return self._groups[d][0].unit
        return "blocks" if dim.kind == "depth" else "weight density"

    def depth_stages(self) -> list[tuple[int, str]]:
        return [(d, s) for d, s in enumerate(self._stages) if s is not None]

    def density_layers(self) -> list[tuple[int, str]]:
        return [(d, layer) for d, layer in enumerate(self._layers) if layer is not None]

    @property
    def masked(self) -> bool:
        """True when the space has density dimensions (its MACs are sparse MACs)."""
        return any(layer is not None for layer in self._layers)

    def reshapes(self, arch: Arch) -> bool:
        """True when `arch` removes channels or blocks; False when it only masks weights."""
        return any(dim.kind != "density" and value != dim.full
                   for dim, (_, value) in zip(self.dims, arch.values, strict=True))

    def channel_order(self) -> dict[str, list[int]]:
        """Root channels of every width group, most important first (group L1 norm of the
        model the space was built from), computed once: every slicer and supernet of the space
        keeps the same first-k channels, also over weights trained further (supernet stage)."""
        if self._order is None:
            self._order = self.graph.channel_order()
        return self._order

    def fix_channel_order(self, order: Any) -> None:
        """Use `order` (another importance's, or the run's as read back) as the channel order;
        ValueError unless it ranks every root of every width group exactly once."""
        groups = {g.name: g.size for _, g in self.width_groups()}
        try:
            ranks = {name: list(order[name]) for name in groups}
            valid = all(sorted(ranks[name]) == list(range(size)) and
                        all(type(i) is int for i in ranks[name])
                        for name, size in groups.items())
        except (TypeError, KeyError):
            valid = False
        if not valid:
            raise ValueError("a channel order must rank every channel of every width group "
                             "of the space once")
        self._order = ranks

    def slicer(self, model: nn.Module) -> Slicer:
        """A slicer over `model`'s weights, keeping the space's `channel_order`."""
        return Slicer(self, model, self.channel_order())

    # --- genes -----------------------------------------------------------------------------
    def encode(self, arch: Arch) -> list[int]:
        names = [name for name, _ in arch.values]
        if names != self._names:
            missing = sorted(set(self._names) - set(names))
            extra = sorted(set(names) - set(self._names))
            raise UserError(f"The architecture does not match this search space (missing "
                            f"{missing[:3]}, unexpected {extra[:3]}); it was made for another "
                            f"model or space config.")
        try:
            return [dim.index(value) for dim, (_, value) in zip(self.dims, arch.values,
                                                                 strict=True)]
        except ValueError as err:
            raise UserError(f"Invalid architecture: {err}.") from None

    def decode(self, genes: Sequence[int]) -> Arch:
        if len(genes) != len(self.dims):
            raise UserError(f"Expected {len(self.dims)} genes, got {len(genes)}.")
        values = []
        for dim, g in zip(self.dims, genes, strict=True):
            if not 0 <= int(g) < len(dim.choices):
                raise UserError(f"Gene {g} out of range for '{dim.name}' "
                                f"(0..{len(dim.choices) - 1}).")
            values.append((dim.name, dim.choices[int(g)]))
        return Arch(tuple(values))

    def bounds(self) -> list[int]:
        """Number of choices per dimension: gene d lies in [0, bounds[d])."""
        return [len(d.choices) for d in self.dims]

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.decode([int(rng.integers(len(d.choices))) for d in self.dims])

    def largest(self) -> Arch:
        return self.decode([len(d.choices) - 1 for d in self.dims])

    def block_kept(self, d: int, probs: torch.Tensor) -> torch.Tensor:
        """P(block b of depth dimension `d` runs), b = 0 .. full - 1, under the distribution
        `probs` over its choices (block b runs when more than b blocks are kept):
        differentiable in `probs` (TAS's expected MACs and expected latency)."""
        choices = torch.tensor(self.dims[d].choices, device=probs.device)
        return torch.stack([(probs * (choices > b)).sum() for b in range(self.dims[d].full)])

    def smallest(self) -> Arch:
        return self.decode([0 for _ in self.dims])

    def uniform(self, ratio: float, blocks: int | None = None) -> Arch:
        """The same width ratio in every group (nearest choice) and, given `blocks`, that many
        blocks kept in every stage (nearest choice, at most the stage's own); all blocks
        kept otherwise. In a space without width dimensions, the same density in every masked
        layer instead of the width."""
        kind = "width" if any(d.kind == "width" for d in self.dims) else "density"

        def choice(d: Dimension) -> Value:
            if d.kind == kind:
                return d.nearest(ratio * d.full)
            if d.kind == "depth" and blocks is not None:
                return d.nearest(min(blocks, d.full))
            return d.full

        return Arch(tuple((d.name, choice(d)) for d in self.dims))

    def uniform_sweep(self) -> list[Arch]:
        """`uniform(r)` over the space's width ratios, widest first, distinct; in a space
        without width dimensions, the same density in every masked layer over its grid. The
        uniform baseline, and the start of the sampler and evolutionary searches."""
        return list(dict.fromkeys(self.uniform(r) for r in self._uniform_ratios()))

    def compound_grid(self) -> list[Arch]:
        """Uniform scaling in width AND depth (EfficientNet's compound scaling, on a grid):
        `uniform(r, k)` for every width ratio r and every count k of blocks kept per stage,
        deepest and widest first, distinct. Without depth dimensions: `uniform_sweep()`."""
        depths = [d for d in self.dims if d.kind == "depth"]
        if not depths:
            return self.uniform_sweep()
        counts = sorted({int(c) for d in depths for c in d.choices}, reverse=True)
        return list(dict.fromkeys(self.uniform(r, k) for k in counts
                                  for r in self._uniform_ratios()))

    def _uniform_ratios(self) -> list[float]:
        ratios = self.width_ratios
        if not any(d.kind == "width" for d in self.dims) and self.density_layers():
            ratios = self.dims[self.density_layers()[0][0]].choices
        return sorted(ratios, reverse=True)

    def with_densities(self, densities: dict[str, float]) -> Arch:
        """The arch nearest to per-layer `densities` (nearest choice on a log scale; a layer
        not given stays dense), widths and depths full."""
        def nearest(dim: Dimension, d: float) -> Value:
            return min(dim.choices, key=lambda c: abs(np.log(c) - np.log(max(d, 1e-9))))

        layer_of = dict(zip(self.dims, self._layers, strict=True))
        return Arch(tuple((dim.name, nearest(dim, densities.get(layer_of[dim], 1.0))
                           if dim.kind == "density" else dim.full) for dim in self.dims))

    # --- costs -----------------------------------------------------------------------------
    def _values(self, arch: Arch) -> list[Value]:
        self.encode(arch)
        return [v for _, v in arch.values]

    def macs(self, arch: Arch) -> int:
        """MACs for one example, counted as torch-pruning's count_ops_and_params does, except
        that a masked layer counts only its kept weights (sparse MACs)."""
        return self.cost.macs(self._values(arch))

    def params(self, arch: Arch) -> int:
        return self.cost.params(self._values(arch))

    def call_channels(self, arch: Arch) -> list[tuple[int, int, int]]:
        """(cost-model call index, input channels, output channels) of each layer call the
        arch keeps: what a latency table looks up."""
        return self.cost.call_channels(self._values(arch))

    def weight_density(self, arch: Arch) -> float:
        """Fraction of the masked layers' weights an arch keeps (its overall weight density,
        1 - sparsity), counted on the dense layer shapes."""
        total = sum(self.layer_weights.values())
        if not total:
            return 1.0
        values = arch.to_dict()
        return sum(kept_weights(n, values[DENSITY_PREFIX + layer])
                   for layer, n in self.layer_weights.items()) / total

    def masked_costs(self, densities: dict[str, float]) -> tuple[int, int]:
        """(MACs, params) of the full-size model with exact per-layer `densities` (a trained
        mask need not sit on the density grid)."""
        values = [densities.get(layer, 1.0) if layer is not None else dim.full
                  for dim, layer in zip(self.dims, self._layers, strict=True)]
        return self.cost.macs(values), self.cost.params(values)

    @property
    def dense_macs(self) -> int:
        return self.macs(self.largest())

    @property
    def dense_params(self) -> int:
        return self.params(self.largest())


def _tied(dims: list[Dimension], groups: list[ChannelGroup | list[ChannelGroup] | None]
          ) -> tuple[list[Dimension], list[ChannelGroup | list[ChannelGroup] | None]]:
    """The width dimensions of groups that are one kind repeated per layer (names equal but
    for their numbers, same size and choices) merged into one, named by the pattern; the other
    dimensions as they are, in their order (a tie where its first group was)."""
    def kind(d: int) -> tuple[str, tuple[int, ...], str] | None:
        group = groups[d]
        if not isinstance(group, ChannelGroup):
            return None
        return re.sub(r"\.\d+(?=\.|$)", ".*", group.name), dims[d].choices, group.unit

    members: dict[tuple, list[int]] = defaultdict(list)
    for d in range(len(dims)):
        if (k := kind(d)) is not None:
            members[k].append(d)
    out_dims, out_groups = [], []
    for d, dim in enumerate(dims):
        k = kind(d)
        if k is None or len(members[k]) == 1:
            out_dims.append(dim)
            out_groups.append(groups[d])
        elif members[k][0] == d:
            out_dims.append(Dimension(WIDTH_PREFIX + k[0], "width", dim.choices, dim.full))
            out_groups.append([groups[i] for i in members[k]])
    return out_dims, out_groups
