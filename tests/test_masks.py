"""Density dimensions: exact per-layer densities, sparse MACs equal to a count over the non-zero
weights, masks on the evaluator's working copy, masks held through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from prunesearch.evaluators import WeightSharingEvaluator
from prunesearch.models import create_model
from prunesearch.spaces import Arch, Space, layer_densities
from prunesearch.spaces.masks import (
    global_magnitude_densities,
    hold_masks,
    kept_weights,
    magnitude_mask,
    magnitude_masks,
    maskable_layers,
    release_masks,
)

DENSITIES = (0.02, 0.1, 0.25, 0.5, 1.0)


def _weighted_ops(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(dense weight MACs, non-zero weight MACs) of every conv/linear call: each weight
    multiplies once per output position (conv) or input row (linear)."""
    dense = nonzero = 0

    def hook(mod, args, out):
        nonlocal dense, nonzero
        positions = out[0, 0].numel() if isinstance(mod, nn.Conv2d) else args[0][0].numel() \
            // mod.in_features
        dense += mod.weight.numel() * positions
        nonzero += int(torch.count_nonzero(mod.weight)) * positions

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(example)
    for h in handles:
        h.remove()
    return dense, nonzero


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_small"])
def test_sparse_macs_equal_a_count_over_nonzero_weights(name):
    torch.manual_seed(0)
    model = create_model(name, 1, 10).eval()
    example = torch.randn(1, 1, 28, 28)
    space = Space.from_model(model, example, width_ratios=(0.5, 1.0), densities=DENSITIES)
    assert space.masked
    assert space.dense_macs == tp.utils.count_ops_and_params(model, example)[0]
    slicer = space.slicer(model)
    rng = np.random.default_rng(0)
    for arch in [space.smallest()] + [space.sample(rng) for _ in range(5)]:
        sub = slicer.build(arch)
        tp_macs, tp_params = tp.utils.count_ops_and_params(sub, example)
        dense_w, nonzero_w = _weighted_ops(sub, example)
        assert space.macs(arch) == tp_macs - dense_w + nonzero_w
        zeros = sum(m.weight.numel() - int(torch.count_nonzero(m.weight))
                    for m in sub.modules() if isinstance(m, nn.Conv2d | nn.Linear))
        assert space.params(arch) == tp_params - zeros
        assert space.macs(arch) < space.dense_macs


def test_masks_meet_each_layers_density_exactly():
    torch.manual_seed(1)
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28), width_ratios=(1.0,),
                             depth=False, densities=DENSITIES)
    assert all(d.kind == "density" for d in space.dims)
    assert len(space.dims) == len(maskable_layers(model))
    arch = space.sample(np.random.default_rng(4))
    sub = space.slicer(model).build(arch)
    modules = dict(sub.named_modules())
    for layer, density in layer_densities(arch.to_dict()).items():
        w = modules[layer].weight
        assert int(torch.count_nonzero(w)) == kept_weights(w.numel(), density)
        kept = w[w != 0].abs().min()
        dropped = dict(model.named_modules())[layer].weight[w == 0].abs().max()
        assert kept >= dropped  # the largest magnitudes are the ones kept
    w = torch.randn(7, 3)
    assert magnitude_mask(w, 0.001).sum() == 1  # never an empty layer
    assert magnitude_mask(w, 1.0).all()


def test_evaluator_masks_a_working_copy_and_never_touches_the_dense_model():
    torch.manual_seed(2)
    model = create_model("resnet20", 1, 10, width_mult=0.5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    space = Space.from_model(model, x[:1], width_ratios=(1.0,), depth=False,
                             densities=DENSITIES)
    ev = WeightSharingEvaluator(space, model, x[:64], x[64:], y[64:], batch_size=32)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(3)]
    first = [ev.calibration_logits(a) for a in archs]
    again = [ev.calibration_logits(a) for a in reversed(archs)][::-1]
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)
    # the working copy gives what an independently built, recalibrated candidate gives
    built = ev.build(archs[0])
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([built(b) for b in ev.calib]), first[0])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_held_masks_survive_training_and_release_to_plain_weights():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    masks = magnitude_masks(net, {"0": 0.25, "2": 0.5})
    hold_masks(net, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        loss = net(torch.randn(8, 10)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    release_masks(net)
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert int(torch.count_nonzero(net[0].weight)) == kept_weights(160, 0.25)
    assert torch.equal(net[0].weight != 0, masks["0"])


def test_global_magnitude_is_one_threshold_with_a_floor():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 20))
    with torch.no_grad():
        net[0].weight.uniform_(0.5, 1.0)
        net[1].weight.uniform_(-0.1, 0.1)  # all smaller: one threshold empties this layer
    layers = ["0", "1"]
    plain = global_magnitude_densities(net, layers, 0.5)
    assert plain["0"] == 1.0 and plain["1"] == 0.0
    floored = global_magnitude_densities(net, layers, 0.5, min_density=0.1)
    assert floored["1"] == pytest.approx(0.1)
    assert floored["0"] == pytest.approx(0.9)


def test_arch_with_densities_round_trips_through_json():
    model = create_model("mlp", 1, 10, input_size=(40,)).eval()
    space = Space.from_model(model, torch.zeros(1, 40), densities=(0.1, 0.5))
    arch = space.sample(np.random.default_rng(0))
    assert Arch.from_json(arch.to_json()) == arch
    assert space.decode(space.encode(arch)) == arch
