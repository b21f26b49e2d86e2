"""Grouped convolutions are pruned by whole groups, beside a concat, a squeeze-excite gate and
residual adds: costs equal torch-pruning's count of the built network, the built network computes
what the dense model computes with the dropped groups' channels zeroed (the channel-mask
supernet, which never slices), and a model defined here is searched, fine-tuned and exported
(TorchScript and ONNX checked against it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from masked_reference import (
    check_against_masked_model,
    check_exported_formats,
    with_norm_statistics,
)
from torch import nn

import prunesearch
from prunesearch.app.config import load_config
from prunesearch.app.export import export_run
from prunesearch.app.prepare import prepare
from prunesearch.app.run import run_job
from prunesearch.latency import build_latency_model
from prunesearch.spaces import Arch, Space

TINY = Path(__file__).parent / "configs" / "tiny.toml"


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class MixedNet(nn.Module):
    """The model of the issue: a grouped conv (groups = 4) with a squeeze-excite gate inside a
    residual block, whose output is concatenated with a side branch before the classifier."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
                                    nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=4,
                                               bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.se = SqueezeExcite(32)
        self.expand = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.shortcut = nn.Sequential(nn.Conv2d(16, 16, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(16))
        self.side = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.shortcut(x) + self.expand(self.se(self.grouped(self.reduce(x)))))
        y = torch.cat([y, self.side(y)], dim=1)
        return self.fc(torch.flatten(self.pool(y), 1))


class GroupedChain(nn.Module):
    """Harder couplings: a grouped conv on the input image (its input cannot be pruned, so its
    groups stay whole), two grouped convs in a row (one coupling over both), a grouped conv
    inside a residual add (its input and output are one torch-pruning group), and a grouped
    conv with 2 groups feeding one with 4 through their shared channels (stays whole)."""

    def __init__(self, in_chans: int = 2, num_classes: int = 5) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(in_chans, 12, 3, padding=1, groups=2),
                                   nn.BatchNorm2d(12), nn.ReLU())
        self.widen = nn.Sequential(nn.Conv2d(12, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.g1 = nn.Sequential(nn.Conv2d(24, 48, 3, padding=1, groups=6), nn.BatchNorm2d(48),
                                nn.ReLU())
        self.g2 = nn.Sequential(nn.Conv2d(48, 24, 3, padding=1, groups=6, bias=False),
                                nn.BatchNorm2d(24))
        self.narrow = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.residual = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False),
                                      nn.BatchNorm2d(16))
        self.bridge = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.mismatch_a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=2),
                                        nn.BatchNorm2d(16), nn.ReLU())
        self.mismatch_b = nn.Conv2d(16, 8, 3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.widen(self.first(x))
        x = self.narrow(self.g2(self.g1(x)))
        x = torch.relu(x + self.residual(x))
        x = self.mismatch_b(self.mismatch_a(self.bridge(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def mixed_net(in_chans: int, num_classes: int, **_: object) -> nn.Module:
    """The factory a job names as `test_grouped_convs:mixed_net`."""
    return MixedNet(in_chans, num_classes)


CASES = [("mixed", MixedNet, (1, 16, 16)), ("chain", GroupedChain, (2, 12, 12))]


@pytest.mark.parametrize(("name", "cls", "shape"), CASES, ids=[c[0] for c in CASES])
def test_whole_groups_cost_what_torch_pruning_counts_and_compute_the_masked_model(
        name, cls, shape):
    torch.manual_seed(0)
    example = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    check_against_masked_model(with_norm_statistics(cls()), example, cls)


def test_a_grouped_conv_is_one_dimension_over_its_groups_and_keeps_their_width():
    model = with_norm_statistics(MixedNet())
    space = Space.from_model(model, torch.zeros(1, 1, 16, 16))
    dim = next(d for d in space.dims if d.name == "width:grouped.0")
    assert (dim.choices, dim.full) == ((1, 2, 3, 4), 4)
    assert space.unit(space.dims.index(dim)) == "conv groups"
    arch = Arch(tuple((n, 2 if n == dim.name else v) for n, v in space.largest().values))
    conv = space.slicer(model).build(arch).grouped[0]
    assert (conv.groups, conv.in_channels, conv.out_channels) == (2, 16, 16)
    assert conv.weight.shape == (16, 8, 3, 3)  # each kept group keeps all its inputs


def test_couplings_that_cannot_lose_whole_groups_stay_whole():
    model = with_norm_statistics(GroupedChain())
    space = Space.from_model(model, torch.zeros(1, 2, 12, 12))
    widths = {d.name: d for d in space.dims if d.kind == "width"}
    chained = widths.pop("width:g1.0")  # g1 and g2 share channels: one dimension, 6 groups
    assert (chained.full, chained.choices) == (6, (2, 3, 4, 5, 6))
    assert widths.pop("width:residual.0").full == 4
    # `first` (image input) with `widen`'s input, `bridge` with `mismatch_a` and `mismatch_b`
    # (2 vs 4 groups on shared channels): no dimension
    assert not widths, widths


def test_the_latency_table_times_grouped_convs_at_each_number_of_groups(tmp_path):
    model = with_norm_statistics(MixedNet())
    space = Space.from_model(model, torch.zeros(1, 1, 16, 16))
    table = build_latency_model(space, model, 2, torch.device("cpu"), cache_dir=tmp_path,
                                repeats=1)
    d = next(i for i, dim in enumerate(space.dims) if dim.name == "width:grouped.0")
    call = next(i for i, c in enumerate(space.cost.calls) if c.module == "grouped.0")
    timed = {tuple(key.rsplit("|", 2)[1:]) for key in table._entries
             if key.startswith(table._templates[call] + "|")}
    assert timed == {(str(8 * g), str(8 * g)) for g in space.dims[d].choices}
    rng = np.random.default_rng(1)
    assert all(table.predict(space.sample(rng)) > 0 for _ in range(5))


def test_a_model_with_grouped_convs_is_searched_finetuned_and_exported(tmp_path):
    cfg = load_config(TINY, ["model.name='test_grouped_convs:mixed_net'", "search.budget=8",
                             "finetune.targets=[0.6]", "finetune.epochs=1"])
    run_dir = run_job(cfg, tmp_path / "runs", device="cpu", progress=False).run_dir
    folder = export_run(run_dir, None, ("macs", 0.6), ["pt", "ts", "onnx"], tmp_path / "exp",
                        progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert "not fine-tuned" not in meta["source"], meta["source"]
    arch = Arch.from_dict(meta["arch"])
    loaded = prunesearch.load(folder, trust_code=True)
    assert loaded.grouped[0].groups == arch["width:grouped.0"]
    prep = prepare(load_config(run_dir / "config.toml"), torch.device("cpu"), progress=False)
    check_exported_formats(folder, loaded, prep.data.val_x[:16])
    assert meta["macs"] == prep.space.macs(arch) and meta["macs_ratio"] <= 0.6
