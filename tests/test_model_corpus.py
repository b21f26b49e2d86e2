"""Networks from outside the zoo whose couplings torch-pruning traces but cannot cut
consistently: `Space.from_model` keeps those couplings whole, says why, and searches the rest
(issue 31: ShuffleNetV2 units stopped with an error, as did a grouped conv reading a concat)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from masked_reference import check_against_masked_model, with_norm_statistics
from torch import nn


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's basic unit: split the channels, transform one half, concat, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        b = c // 2
        self.branch = nn.Sequential(*_conv_bn(b, b), nn.ReLU(), *_conv_bn(b, b, 3, groups=b),
                                    *_conv_bn(b, b), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, changed = x.chunk(2, dim=1)
        return _shuffle(torch.cat([kept, self.branch(changed)], 1), 2)


class ShuffleDown(nn.Module):
    """ShuffleNetV2's down-sampling unit: two strided branches, concat, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        b = cout // 2
        self.left = nn.Sequential(*_conv_bn(cin, cin, 3, 2, groups=cin), *_conv_bn(cin, b),
                                  nn.ReLU())
        self.right = nn.Sequential(*_conv_bn(cin, b), nn.ReLU(), *_conv_bn(b, b, 3, 2, groups=b),
                                   *_conv_bn(b, b), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16, 3), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleDown(16, 32), ShuffleUnit(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.stem(x)).mean((2, 3)))


class GroupedReadsConcat(nn.Module):
    """A grouped convolution over the concatenation of two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(*_conv_bn(1, 8, 3), nn.ReLU())
        self.b = nn.Sequential(*_conv_bn(1, 8, 3), nn.ReLU())
        self.grouped = nn.Sequential(*_conv_bn(16, 16, 3, groups=4), nn.ReLU())
        self.tail = nn.Sequential(*_conv_bn(16, 24, 3, 2), nn.ReLU())
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.grouped(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(self.tail(y).mean((2, 3)))


@pytest.mark.parametrize("cls", [ShuffleNet, GroupedReadsConcat])
def test_couplings_that_cannot_be_cut_stay_whole_and_the_rest_is_searched(cls):
    example = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    space = check_against_masked_model(with_norm_statistics(cls()), example, cls)
    widths = [d for d in space.dims if d.kind == "width"]
    assert widths  # something is searched
    if cls is ShuffleNet:  # the first unit's output: split by the next unit after a shuffle
        names = dict(space.kept_whole)
        assert "units.0.branch.5" in names and "fails" in names["units.0.branch.5"]
    slicer = space.slicer(cls().eval())
    for seed in range(8):
        arch = space.sample(np.random.default_rng(seed))
        assert slicer.build(arch)(example).shape == (4, 10)


def test_prunesearch_space_lists_the_couplings_kept_whole(capsys):
    from typer.testing import CliRunner

    from prunesearch.cli import app

    result = CliRunner().invoke(app, ["space", "test_model_corpus:shuffle_net",
                                      "--input-shape", "1,12,12"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "kept whole" in text and "units.0.branch.5" in text


def shuffle_net(in_chans: int, num_classes: int, **_: object) -> nn.Module:
    """The factory `prunesearch space` builds (a `module:factory` model)."""
    assert (in_chans, num_classes) == (1, 10)
    return ShuffleNet()
