"""Independent references for the networks a Space builds.

`with_norm_statistics`: non-trivial norm statistics, so a wrongly kept channel shows.
`tp_pruned`: the same arch pruned physically by torch-pruning (channel groups it can prune).
`check_exported_formats`: an export's TorchScript and ONNX files compute what it loads as.

`check_against_masked_model`: for what torch-pruning cannot prune the way prunesearch does
(whole groups of a grouped conv, attention heads). Analytic costs equal
torch-pruning's count of the built network, the built network computes what the dense model
computes with the dropped channels zeroed (the channel-mask supernet, which never slices), and
an export's way of rebuilding it (a full-size skeleton shrunk to the slim weights) gives the
same network."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch_pruning as tp
from torch import nn

from prunesearch.spaces import Arch, Space, blocks_kept, shrink_to_state, truncate_depth
from prunesearch.spaces.supernet import Supernet


def with_norm_statistics(model: nn.Module, seed: int = 1) -> nn.Module:
    """`model` in eval mode with random BatchNorm running statistics and random scales and
    shifts in every norm layer (BatchNorm, LayerNorm, RMS norms), drawn from `seed`: a sliced
    network that keeps a wrong channel then computes something else."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if "Norm" not in type(m).__name__:
            continue
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        for name, fill in (("weight", lambda n: torch.rand(n, generator=gen) + 0.5),
                           ("bias", lambda n: torch.randn(n, generator=gen) * 0.1)):
            p = getattr(m, name, None)
            if isinstance(p, torch.Tensor):
                p.data.copy_(fill(p.shape))
    return model.eval()


def check_exported_formats(folder: Path, loaded: nn.Module, x: torch.Tensor) -> None:
    """model.ts and model.onnx in an export folder give `loaded`'s outputs on `x`."""
    with torch.no_grad():
        expected = loaded(x)
        torch.testing.assert_close(torch.jit.load(str(folder / "model.ts"))(x), expected,
                                   rtol=0, atol=1e-5)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - expected.numpy()).max() <= 1e-4


def check_against_masked_model(model: nn.Module, example: torch.Tensor,
                               skeleton: Callable[[], nn.Module], **space_options: Any) -> Space:
    """Run the check on the smallest, the half-width and 6 random archs (of the space
    `Space.from_model` builds with `space_options`); returns the space."""
    space = Space.from_model(model, example, **space_options)
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
