"""Independent references for the networks a Space builds.

`tp_pruned`: the same arch pruned physically by torch-pruning (channel groups it can prune).

`check_against_masked_model`: for what torch-pruning cannot prune the way prunesearch does
(whole groups of a grouped conv, attention heads) or prunes wrongly (torch-pruning 1.6 keeps a
LayerNorm's channels in set order: its LayerNorm pruner calls `keep_idxs.sort()` and drops the
sorted result, so its pruned transformers scale the wrong channels). Analytic costs equal
torch-pruning's count of the built network, the built network computes what the dense model
computes with the dropped channels zeroed (the channel-mask supernet, which never slices), and
an export's way of rebuilding it (a full-size skeleton shrunk to the slim weights) gives the
same network."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from prunesearch.spaces import Arch, Space, blocks_kept, shrink_to_state, truncate_depth
from prunesearch.spaces.supernet import Supernet


def check_against_masked_model(model: nn.Module, example: torch.Tensor,
                               skeleton: Callable[[], nn.Module]) -> Space:
    """Run the check on the smallest, the half-width and 6 random archs; returns the space."""
    space = Space.from_model(model, example)
    assert (space.dense_macs, space.dense_params) == tp.utils.count_ops_and_params(
        model, example[:1])
    masked = Supernet(space, model, space.channel_order(), hard=True).eval()
    slicer = space.slicer(model)
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.uniform(0.5)] + [space.sample(rng) for _ in range(6)]
    for arch in archs:
        sliced = slicer.build(arch).eval()
        assert (space.macs(arch), space.params(arch)) == tp.utils.count_ops_and_params(
            sliced, example[:1]), arch
        masked.sample = {d: [(g, torch.tensor(1.0))] for d, g in enumerate(space.encode(arch))}
        with torch.no_grad():
            torch.testing.assert_close(sliced(example), masked(example), rtol=0, atol=1e-5)
        rebuilt = skeleton()
        truncate_depth(rebuilt, blocks_kept(arch.to_dict()))
        shrink_to_state(rebuilt, sliced.state_dict())
        rebuilt.load_state_dict(sliced.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(example), sliced(example), rtol=0, atol=0)
    assert space.macs(space.smallest()) < space.dense_macs
    return space


def tp_pruned(space: Space, model: nn.Module, arch: Arch, example: torch.Tensor) -> nn.Module:
    """The same arch built independently: drop blocks, then torch-pruning prunes each channel
    group (groups over conv groups or heads must be at full width: it cannot prune those)."""
    order = space.graph.channel_order()
    pruned = copy.deepcopy(model)
    for d, stage in space.depth_stages():
        del pruned.get_submodule(stage)[arch[space.dims[d].name]:]
    dg = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    modules = dict(pruned.named_modules())
    for d, group in space.width_groups():
        kept = arch[space.dims[d].name]
        if group.unit != "channels":
            assert kept == space.dims[d].full, f"torch-pruning cannot prune {group.unit}"
            continue
        if group.name not in modules:
            continue  # its block was dropped
        root = modules[group.name]
        removed = order[group.name][kept:]
        if removed:
            dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels,
                                 idxs=list(removed)).prune()
    return pruned.eval()
