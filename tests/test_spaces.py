"""Spaces: analytic costs equal torch-pruning's count of the built subnetwork, and the sliced
candidate computes what the same arch physically pruned by torch-pruning computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch_pruning as tp
from masked_reference import tp_pruned, with_norm_statistics
from torch import nn
from torch_pruning.utils import op_counter

from prunesearch.errors import ModelError, UserError
from prunesearch.models import create_model, list_models
from prunesearch.spaces import Arch, Space, register_layer, width_choices
from prunesearch.spaces.layers import cost_kind


class ConcatNet(nn.Module):
    """Not in the zoo: a depthwise conv, concat of two branches feeding a conv, a residual add,
    flatten + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12),
                                nn.BatchNorm2d(12), nn.ReLU6())
        self.left = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(12, 10, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(10), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(18, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.expand = nn.Conv2d(16, 16, 1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Sequential(nn.Linear(16 * 9, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                  nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.stem(x))
        x = self.mix(torch.cat([self.left(x), self.right(x)], dim=1))
        x = x + self.expand(x)
        return self.head(torch.flatten(self.pool(x), 1))


class BranchyNet(nn.Module):
    """Concatenated branches coupled by a depthwise conv and a residual add: that group is
    kept at full width (see spaces.space._splits_branches); the rest is searched."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(12, 10, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(10), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(18, 18, 3, stride=2, padding=1, groups=18),
                                nn.BatchNorm2d(18), nn.ReLU6())
        self.expand = nn.Conv2d(18, 18, 1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Sequential(nn.Linear(18 * 9, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                  nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.dw(x)
        x = x + self.expand(x)
        return self.head(torch.flatten(self.pool(x), 1))


def _models() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    out = [(name, create_model(name, 1, 10, input_size=(28, 28)), (1, 28, 28))
           for name in list_models() if name not in ("mlp", "vit_tiny")]  # vit: test_transformers
    out.append(("mlp", create_model("mlp", 1, 10, input_size=(40,)), (40,)))
    out.append(("concat (test-only model)", ConcatNet(), (1, 16, 16)))
    out.append(("branchy (test-only model)", BranchyNet(), (1, 16, 16)))
    for seed, (_, model, _) in enumerate(out, start=1):
        with_norm_statistics(model, seed)
    return out


MODELS = _models()


@pytest.mark.parametrize(("name", "model", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_analytic_costs_and_slicing_match_torch_pruning(name, model, shape):
    example = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    space = Space.from_model(model, example)
    assert (space.dense_macs, space.dense_params) == tp.utils.count_ops_and_params(
        model, example[:1])
    slicer = space.slicer(model)
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.uniform(0.5)] + [space.sample(rng) for _ in range(6)]
    for arch in archs:
        sliced = slicer.build(arch).eval()
        macs, params = tp.utils.count_ops_and_params(sliced, example[:1])
        assert (space.macs(arch), space.params(arch)) == (macs, params), arch
        reference = tp_pruned(space, model, arch, example)
        assert tp.utils.count_ops_and_params(reference, example[:1]) == (macs, params)
        with torch.no_grad():
            torch.testing.assert_close(sliced(example), reference(example), rtol=0, atol=1e-5)
    assert space.macs(space.smallest()) < space.dense_macs


def test_resnet_has_depth_dimensions_and_dropping_blocks_costs_less():
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    depth = [d for d in space.dims if d.kind == "depth"]
    assert [d.choices for d in depth] == [(1, 2, 3)] * 3
    shallow = Arch(tuple((n, 1 if n.startswith("depth:") else v)
                         for n, v in space.largest().values))
    assert space.macs(shallow) < space.dense_macs
    assert space.params(shallow) < space.dense_params


def test_width_choices_never_below_one_channel_and_include_full():
    assert width_choices(3, [0.1, 0.5]) == (1, 2, 3)
    assert width_choices(16, [0.25, 0.5, 1.0]) == (4, 8, 16)


def test_round_to_gives_multiples_and_the_cost_model_still_matches_the_built_network():
    assert width_choices(64, [0.25, 0.3, 0.375, 1.0], round_to=8) == (16, 24, 64)
    assert width_choices(6, [0.25, 0.5], round_to=8) == (6,)  # narrower than N: stays whole
    model = create_model("resnet20", 1, 10).eval()
    example = torch.zeros(1, 1, 28, 28)
    space = Space.from_model(model, example, round_to=8)
    for dim in space.dims:
        if dim.kind == "width":
            assert all(c % 8 == 0 or c == dim.full for c in dim.choices), dim
    slicer = space.slicer(model)
    arch = space.sample(np.random.default_rng(5))
    assert (space.macs(arch), space.params(arch)) == tp.utils.count_ops_and_params(
        slicer.build(arch).eval(), example)


def test_encode_decode_round_trip_and_validation():
    model = create_model("vgg_small", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    rng = np.random.default_rng(3)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert Arch.from_json(arch.to_json()) == arch
        assert all(0 <= g < b for g, b in zip(space.encode(arch), space.bounds(), strict=True))
    with pytest.raises(UserError, match="does not match"):
        space.encode(Arch((("width:nope", 3),)))
    with pytest.raises(UserError, match="not a choice"):
        name, _ = space.largest().values[0]
        space.encode(Arch(((name, 10_000),) + space.largest().values[1:]))
    with pytest.raises(UserError, match="out of range"):
        space.decode([99] * len(space.dims))


def test_sampling_is_deterministic_per_seed():
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_uniform_ratio_scales_every_group():
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    half = space.uniform(0.5)
    for dim in space.dims:
        expected = dim.full // 2 if dim.kind == "width" else dim.full
        assert half[dim.name] == expected
    assert 0.2 < space.macs(half) / space.dense_macs < 0.35  # about a quarter, plus elementwise


class _Prediction:
    """An output object torch-pruning's tracer cannot walk (it walks tuples, lists, dicts)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class _ObjectOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> _Prediction:
        return _Prediction(self.fc(self.features(x)))


def test_a_model_torch_pruning_cannot_trace_is_traced_another_way_or_searched_in_depth(
        monkeypatch):
    """An output object torch-pruning cannot walk: traced with the output's tensors as a
    tuple. A model it cannot trace at all keeps every coupling whole, with the reason, and
    its depth is still searched; with nothing left the message says why."""
    example = torch.zeros(1, 1, 10, 10)
    with pytest.raises(TypeError):  # the tracer itself fails on the model
        tp.DependencyGraph().build_dependency(_ObjectOutput().eval(), example_inputs=example)
    space = Space.from_model(_ObjectOutput().eval(), example)
    assert sorted(d.name for d in space.dims) == ["width:features.0", "width:features.3"]
    assert space.kept_whole == []

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a tracer failure")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", fails)
    model = create_model("resnet20", 1, 10, width_mult=0.5).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    assert {d.kind for d in space.dims} == {"depth"}
    (where, why), = space.kept_whole
    assert "could not trace" in why and "a tracer failure" in why
    with pytest.raises(ModelError, match="could not trace.*a tracer failure"):
        Space.from_model(_ObjectOutput().eval(), example)


def test_a_layer_without_a_slicer_keeps_its_group_whole_and_says_how_to_cut_it():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 10, 10))
    assert [d.name for d in space.dims] == ["width:3"]  # the rest is searched
    (group, why), = space.kept_whole
    assert group == "0" and "register_layer" in why
    only_unsliced = nn.Sequential(nn.Conv2d(1, 8, 3), nn.InstanceNorm2d(8, affine=True),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 3))
    with pytest.raises(ModelError, match="register_layer"):  # nothing left: say why
        Space.from_model(only_unsliced.eval(), torch.zeros(1, 1, 10, 10))


def test_a_custom_layer_type_registered_once_is_sliced_and_costed():
    class TaggedConv(nn.Conv2d):
        """A user's conv subclass: lookup is by exact type, so it is unknown until registered."""

    sliced_layers = []

    def slice_tagged(m: nn.Module, keep_out: torch.Tensor | None,
                     keep_in: torch.Tensor | None) -> None:
        sliced_layers.append(m)
        w = m.weight.data
        if keep_out is not None:
            w, m.out_channels = w[keep_out], len(keep_out)
            m.bias = nn.Parameter(m.bias.data[keep_out])
        if keep_in is not None:
            w, m.in_channels = w[:, keep_in], len(keep_in)
        m.weight = nn.Parameter(w.contiguous())

    def net(conv: type[nn.Conv2d]) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(conv(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), conv(8, 8, 3),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()

    tagged, plain = net(TaggedConv), net(nn.Conv2d)
    example = torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match="register_layer"):
        Space.from_model(tagged, example)
    register_layer(TaggedConv, cost="conv", slicer=slice_tagged)
    space, reference = Space.from_model(tagged, example), Space.from_model(plain, example)
    assert space.dims == reference.dims
    assert space.macs(space.smallest()) < space.dense_macs
    for arch in (space.largest(), space.uniform(0.5), space.smallest()):
        # Costed as a conv: the same numbers as the plain twin (checked against torch-pruning).
        assert (space.macs(arch), space.params(arch)) == (reference.macs(arch),
                                                          reference.params(arch))
        sliced = space.slicer(tagged).build(arch)
        assert type(sliced[0]) is TaggedConv
        with torch.no_grad():
            torch.testing.assert_close(sliced(example), reference.slicer(plain).build(arch)(
                example), rtol=0, atol=0)
    assert sliced_layers and sliced_layers[0].out_channels < 8


def test_a_layer_type_is_registered_once():
    with pytest.raises(ValueError, match="Conv2d is already registered"):
        register_layer(nn.Conv2d, cost="conv")

    class Scale(nn.Module):
        pass

    register_layer(Scale, cost="act")
    with pytest.raises(ValueError, match="Scale is already registered"):
        register_layer(Scale, cost="act")
    with pytest.raises(ValueError, match="Unknown cost kind"):
        register_layer(type("Other", (nn.Module,), {}), cost="flops")


def test_costed_layer_types_are_those_torch_pruning_counts_by_a_modeled_rule():
    rules = {"conv_flops_counter_hook": "conv", "linear_flops_counter_hook": "linear",
             "bn_flops_counter_hook": "norm", "ln_flops_counter_hook": "layernorm",
             "relu_flops_counter_hook": "act", "pool_flops_counter_hook": "pool",
             "upsample_flops_counter_hook": "act", "rnn_flops_counter_hook": "opaque",
             "rnn_cell_flops_counter_hook": "opaque",
             "multihead_attention_counter_hook": "opaque"}
    for t, hook in op_counter.MODULES_MAPPING.items():
        kind = rules.get(hook.__name__)
        if kind is None:
            with pytest.raises(ModelError, match=f"cannot count the cost of {t.__name__} "):
                cost_kind(t)
        else:
            assert cost_kind(t) == kind, t
    assert cost_kind(nn.Identity) is None


class _DeadChannelNet(nn.Module):
    """Hidden channel 0 has the largest weights but its output is never read (the next
    layer's column 0 is zero): magnitude ranks it first, first-order Taylor last."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)
        with torch.no_grad():
            self.fc1.weight[0] *= 100
            self.fc2.weight[:, 0] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_taylor_importance_ranks_a_channel_nothing_reads_last():
    from prunesearch.scoring import Task, loss_gradients

    model = _DeadChannelNet()
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 3
    space = Space.from_model(model, x[:1])
    assert space.channel_order()["fc1"][0] == 0  # magnitude
    with loss_gradients(model, x, y, Task.default(y), batch_size=16):
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        taylor = space.graph.channel_order(taylor=True)["fc1"]
    assert taylor[-1] == 0
    # the ranking is |w * g| summed over each channel's row and column
    expected = ((model.fc1.weight * grads["fc1.weight"]).abs().sum(1)
                + (model.fc2.weight * grads["fc2.weight"]).abs().sum(0))
    assert taylor == torch.argsort(-expected, stable=True).tolist()
    assert all(p.grad is None for p in model.parameters())  # the block leaves no gradients


def test_a_channel_order_read_back_must_rank_every_channel_once():
    space = Space.from_model(_DeadChannelNet(), torch.zeros(1, 4))
    good = space.channel_order()
    space.fix_channel_order({"fc1": list(reversed(good["fc1"]))})
    assert space.channel_order()["fc1"] == list(reversed(good["fc1"]))
    for bad in ({}, {"fc1": [0] * 8}, {"fc1": list(range(7))}, {"fc1": [str(i) for i in
                range(8)]}, {"fc1": [float(i) for i in range(8)]}, "fc1", None):
        with pytest.raises(ValueError, match="rank every channel"):
            space.fix_channel_order(bad)


def test_the_run_ranks_channels_by_taylor_importance_when_asked():
    from prunesearch.app.config import load_config
    from prunesearch.app.prepare import build_space, load_run_data

    cfg = load_config(Path(__file__).parent / "configs" / "tiny.toml")
    taylor = cfg.model_copy(update={"space": cfg.space.model_copy(
        update={"importance": "taylor"})})
    data = load_run_data(cfg)
    model = create_model("resnet20", 1, data.num_classes, 0.5).eval()
    orders = [build_space(c, model, data).channel_order() for c in (cfg, taylor)]
    assert orders[0] != orders[1]
    assert all(p.grad is None for p in model.parameters())
    # supernet and other cache keys change only when the option is not its old default
    assert "importance" not in cfg.space.cache_fields()
    assert taylor.space.cache_fields()["importance"] == "taylor"
