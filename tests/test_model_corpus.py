"""A corpus of small networks from outside the zoo, built in code (one per architecture family),
each searched, sliced and exported the way a user's network would be.

For every one: `Space.from_model` builds (couplings torch-pruning traces but cannot cut
consistently are kept whole, with a reason: issue 31, ShuffleNetV2 units and a grouped conv
reading a concat stopped with an error), or says clearly that nothing is searchable; the sliced
networks cost what torch-pruning counts and compute what the hard-masked supernet computes
(`check_against_masked_model`); and a subnetwork exports (prunesearch's `write_export`) to
TorchScript and ONNX files that compute what PyTorch computes. A case that fails because of a
prunesearch limitation is a strict xfail naming the failure."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from masked_reference import (
    check_against_masked_model,
    check_exported_formats,
    with_norm_statistics,
)
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.runs.export import GIVEN_MODEL, ONNX_TOLERANCE, load, write_export
from prunesearch.spaces import Space
from prunesearch.spaces.supernet import Supernet

Act = Callable[[], nn.Module]


# --- shared pieces -------------------------------------------------------------------------
def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             one_d: bool = False) -> list:
    """Conv without bias (2-D, or 1-D with `one_d`), then its BatchNorm."""
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if one_d else (nn.Conv2d, nn.BatchNorm2d)
    return [conv(cin, cout, k, stride, k // 2, groups=groups, bias=False), norm(cout)]


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
         act: Act = nn.ReLU) -> nn.Sequential:
    """Conv (no bias), BatchNorm, activation."""
    return nn.Sequential(*_conv_bn(cin, cout, k, stride, groups), act())


def _mlp(dim: int, hidden: int, act: Act = nn.GELU) -> nn.Sequential:
    """Linear, activation, linear back to `dim`."""
    return nn.Sequential(nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim))


class Classifier(nn.Module):
    """Features, the mean over every axis after the channels, an optional norm, a linear head.
    `droppable`: indices of `features` that are stages of same-shape blocks (depth search)."""

    def __init__(self, features: nn.Sequential, width: int, droppable: tuple[int, ...] = (),
                 head_norm: bool = False) -> None:
        super().__init__()
        self.features = features
        self.norm = nn.LayerNorm(width) if head_norm else nn.Identity()
        self.head = nn.Linear(width, 10)
        self.droppable = droppable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).flatten(2).mean(2)))

    def depth_stages(self) -> list[tuple[str, nn.Sequential]]:
        return [(f"features.{i}", self.features[i]) for i in self.droppable]


class Residual(nn.Module):
    """body(x) + shortcut(x) (the identity by default), then an optional activation."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None,
                 act: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut or nn.Identity()
        self.act = act or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class Concat(nn.Module):
    """Branches over the same input, concatenated along the channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class SqueezeExcite(nn.Module):
    """Channel gates from the pooled input: 1x1 conv, act, 1x1 conv, gate; x times gates."""

    def __init__(self, c: int, squeeze: int, act: Act = nn.ReLU, gate: Act = nn.Sigmoid) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1), gate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


# --- convolutional families ----------------------------------------------------------------
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
    """ShuffleNetV2: a stem, a basic unit, a down-sampling unit, a basic unit."""

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


def _dense_layer(cin: int, growth: int) -> Concat:
    """DenseNet's BN-ReLU-conv1x1-BN-ReLU-conv3x3 layer, its output appended to its input."""
    return Concat(nn.Identity(), nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 2 * growth, 1, bias=False),
        nn.BatchNorm2d(2 * growth), nn.ReLU(), nn.Conv2d(2 * growth, growth, 3, padding=1,
                                                         bias=False)))


def densenet() -> nn.Module:
    """Two dense blocks with a transition (BN-ReLU-conv1x1-avgpool) between them."""
    return Classifier(nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        *[_dense_layer(8 + 4 * i, 4) for i in range(3)],
        nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 12, 1, bias=False), nn.AvgPool2d(2),
        *[_dense_layer(12 + 4 * i, 4) for i in range(2)],
        nn.BatchNorm2d(20), nn.ReLU()), 20)


def _bottleneck(cin: int, cout: int, width: int, groups: int, stride: int = 1,
                se: int = 0) -> Residual:
    """1x1 - grouped 3x3 - (squeeze-excite) - 1x1 with a residual; a strided 1x1 projection
    shortcut where the shape changes (ResNeXt, RegNetX/Y)."""
    body = nn.Sequential(_cbr(cin, width), _cbr(width, width, 3, stride, groups),
                         *([SqueezeExcite(width, se)] if se else []), *_conv_bn(width, cout))
    shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) \
        if stride > 1 or cin != cout else None
    return Residual(body, shortcut, nn.ReLU())


def resnext() -> nn.Module:
    """ResNeXt bottlenecks (cardinality 4) in a droppable stage."""
    return Classifier(nn.Sequential(_cbr(1, 16, 3), nn.Sequential(
        *[_bottleneck(16, 16, 16, 4) for _ in range(2)])), 16, droppable=(1,))


def regnet() -> nn.Module:
    """RegNetY: stages opening with a strided block, group width 4, squeeze-excite."""
    return Classifier(nn.Sequential(
        _cbr(1, 8, 3),
        nn.Sequential(_bottleneck(8, 16, 16, 4, 2, se=2), _bottleneck(16, 16, 16, 4, se=4)),
        nn.Sequential(_bottleneck(16, 24, 24, 6, 2, se=4))), 24, droppable=(1,))


def _inverted_residual(cin: int, cout: int, expand: int, k: int, stride: int, act: Act,
                       se: Callable[[int], nn.Module]) -> nn.Module:
    """MobileNetV3 / EfficientNet block: expand 1x1, depthwise kxk, squeeze-excite, project
    1x1 (no activation), residual when the shape is kept."""
    hidden = cin * expand
    body = nn.Sequential(_cbr(cin, hidden, act=act), _cbr(hidden, hidden, k, stride, hidden, act),
                         se(hidden), *_conv_bn(hidden, cout))
    return Residual(body) if stride == 1 and cin == cout else body


def mobilenet_v3() -> nn.Module:
    """Hard-swish blocks with ReLU / hard-sigmoid squeeze-excite."""
    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return _inverted_residual(cin, cout, 3, 3, stride, nn.Hardswish,
                                  lambda c: SqueezeExcite(c, c // 4, nn.ReLU, nn.Hardsigmoid))

    return Classifier(nn.Sequential(
        _cbr(3, 8, 3, 2, act=nn.Hardswish), block(8, 12, 2), block(12, 12, 1),
        _cbr(12, 24, act=nn.Hardswish)), 24)


def efficientnet() -> nn.Module:
    """MBConv blocks: SiLU, squeeze-excite (a quarter of the block's input), residual."""
    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return _inverted_residual(cin, cout, 4, 3, stride, nn.SiLU,
                                  lambda c: SqueezeExcite(c, max(2, cin // 4), nn.SiLU))

    return Classifier(nn.Sequential(
        _cbr(3, 8, 3, 2, act=nn.SiLU), block(8, 8, 1),
        nn.Sequential(block(8, 12, 2), block(12, 12, 1)),
        _cbr(12, 24, act=nn.SiLU)), 24)


def inception() -> nn.Module:
    """GoogLeNet-style modules: 1x1, 1x1-3x3, 1x1-3x3-3x3 and pool-1x1 branches, concat."""
    def module(cin: int) -> Concat:
        return Concat(_cbr(cin, 8), nn.Sequential(_cbr(cin, 4), _cbr(4, 8, 3)),
                      nn.Sequential(_cbr(cin, 2), _cbr(2, 4, 3), _cbr(4, 4, 3)),
                      nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(cin, 4)))

    return Classifier(nn.Sequential(_cbr(1, 16, 3), module(16), nn.MaxPool2d(2), module(24)), 24)


class ChannelsLast(nn.Module):
    """Apply `inner` (LayerNorm, linear layers) with the channels moved to the last axis."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm and inverted MLP, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)  # layer scale (ConvNeXt inits 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.mlp(self.norm(y))
        return x + y.permute(0, 3, 1, 2)


def convnext() -> nn.Module:
    """Patchify stem with a channels-first LayerNorm, blocks, a LayerNorm-conv downsampling."""
    return Classifier(nn.Sequential(
        nn.Conv2d(3, 8, 2, 2), ChannelsLast(nn.LayerNorm(8, eps=1e-6)),
        nn.Sequential(ConvNeXtBlock(8), ConvNeXtBlock(8)),
        ChannelsLast(nn.LayerNorm(8, eps=1e-6)), nn.Conv2d(8, 16, 2, 2),
        nn.Sequential(ConvNeXtBlock(16))), 16, droppable=(2,), head_norm=True)


class UNet(nn.Module):
    """Two-level U-Net: encoder, bottleneck, upsampling (bilinear, or with `transposed` the
    original's 2x2 up-convolutions), skip concatenations, a 1x1 dense-prediction head
    (N x 3 classes x H x W)."""

    def __init__(self, transposed: bool = False) -> None:
        super().__init__()
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c, 2, 2) for c in (8, 4)]) \
            if transposed else None
        self.enc1 = nn.Sequential(_cbr(3, 4, 3), _cbr(4, 4, 3))
        self.enc2 = nn.Sequential(_cbr(4, 8, 3), _cbr(8, 8, 3))
        self.mid = nn.Sequential(_cbr(8, 12, 3), _cbr(12, 8, 3))
        self.dec2 = nn.Sequential(_cbr(16, 8, 3), _cbr(8, 4, 3))
        self.dec1 = nn.Sequential(_cbr(8, 4, 3), _cbr(4, 4, 3))
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self._up(0, m), e2], 1))
        d1 = self.dec1(torch.cat([self._up(1, d2), e1], 1))
        return self.out(d1)

    def _up(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.up is None:
            return F.interpolate(x, scale_factor=2, mode="bilinear")
        return self.up[i](x)


class InPlaceFPN(nn.Module):
    """In-place ReLUs and additions (`y += ...`), a coarse branch upsampled by F.interpolate."""

    def __init__(self) -> None:
        super().__init__()
        relu = partial(nn.ReLU, inplace=True)
        self.stem = _cbr(1, 8, 3, act=relu)
        self.fine = _cbr(8, 8, 3, act=relu)
        self.coarse = _cbr(8, 8, 3, 2, act=relu)
        self.fuse = _cbr(8, 16, 3, act=relu)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.fine(x)
        y += F.interpolate(self.coarse(x), scale_factor=2, mode="nearest")
        y += x
        return self.head(self.fuse(y).mean((2, 3)))


class SharedConv(nn.Module):
    """One nn.Conv2d called twice (shared weights), each call with its own BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(1, 8, 3)
        self.shared = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
        self.tail = _cbr(8, 16, 3, 2)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.bn1(self.shared(x)))
        x = F.relu(self.bn2(self.shared(x)))
        return self.head(self.tail(x).mean((2, 3)))


def vgg() -> nn.Module:
    """Conv-BN-ReLU pairs, max pooling, a flattened two-layer classifier with dropout."""
    return nn.Sequential(_cbr(1, 8, 3), _cbr(8, 8, 3), nn.MaxPool2d(2), _cbr(8, 16, 3),
                         _cbr(16, 16, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 9, 24),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(24, 10))


def group_norm_net() -> nn.Module:
    """Convolutions without bias, each followed by GroupNorm (4 groups) and ReLU."""
    def conv_gn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.GroupNorm(4, cout), nn.ReLU())

    return Classifier(nn.Sequential(conv_gn(1, 16), conv_gn(16, 16, 2), conv_gn(16, 24)), 24)


def se_resnet() -> nn.Module:
    """SE-ResNet basic blocks (3x3-3x3, squeeze-excite, identity) in a droppable stage."""
    def block(c: int) -> Residual:
        return Residual(nn.Sequential(_cbr(c, c, 3), *_conv_bn(c, c, 3), SqueezeExcite(c, c // 4)),
                        act=nn.ReLU())

    return Classifier(nn.Sequential(_cbr(1, 12, 3), nn.Sequential(block(12), block(12))), 12,
                      droppable=(1,))


def conv1d_net() -> nn.Module:
    """Conv1d-BatchNorm1d layers on a 1 x 64 signal, a residual block, mean over time."""
    conv_bn = partial(_conv_bn, one_d=True)
    return Classifier(nn.Sequential(
        *conv_bn(1, 8, 5), nn.ReLU(), *conv_bn(8, 16, 3, 2), nn.ReLU(),
        Residual(nn.Sequential(*conv_bn(16, 16, 3), nn.ReLU(), *conv_bn(16, 16, 3)),
                 act=nn.ReLU())), 16)


class ConvGRU(nn.Module):
    """A conv stem, its columns read as a sequence by a GRU (kept whole, with the channels
    it reads), the last state classified."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(1, 8, 3), _cbr(8, 8, 3), nn.MaxPool2d(2))
        self.rnn = nn.GRU(8 * 6, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.stem(x).permute(0, 3, 1, 2).flatten(2)  # (N, width, channels x height)
        return self.head(self.rnn(seq)[0][:, -1])


# --- token mixers ----------------------------------------------------------------------------
class PreNormBlock(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)): the skeleton of a transformer block."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module | None = None,
                 norm: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.norm1, self.mixer = norm(dim), mixer
        self.norm2, self.mlp = norm(dim), mlp or _mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchNet(nn.Module):
    """Patches embedded by a strided conv into (N, tokens, dim), blocks, a final LayerNorm,
    then the class token or the mean over tokens, a linear head. The blocks are droppable."""

    def __init__(self, dim: int, patch: int, blocks: list[nn.Module],
                 class_token: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (16 // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1) if class_token else None
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.1) if class_token else None
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0] if self.cls is not None else t.mean(1))

    def depth_stages(self) -> list[tuple[str, nn.Sequential]]:
        return [("blocks", self.blocks)]


class Transposed(nn.Module):
    """`inner` over the token axis: MLP-Mixer's token mixing."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.transpose(1, 2)).transpose(1, 2)


def mlp_mixer() -> nn.Module:
    """Token-mixing and channel-mixing MLPs over 16 patches of 4x4, 24 channels."""
    return PatchNet(24, 4, [PreNormBlock(24, Transposed(_mlp(16, 32))) for _ in range(2)])


class FusedAttention(nn.Module):
    """Multi-head self-attention with one qkv projection (timm's ViT and Swin)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def vit() -> nn.Module:
    """ViT: class token, a position-embedding parameter, pre-norm attention blocks."""
    return PatchNet(16, 4, [PreNormBlock(16, FusedAttention(16, 4)) for _ in range(2)],
                    class_token=True)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention as self-attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class Windowed(nn.Module):
    """Swin's window partition around `inner`: tokens of a side x side grid, cyclically shifted
    by `shift`, attend within window x window windows."""

    def __init__(self, inner: nn.Module, side: int, window: int, shift: int) -> None:
        super().__init__()
        self.inner, self.side, self.window, self.shift = inner, side, window, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, c = x.shape
        s, w, k = self.side, self.window, self.side // self.window
        grid = torch.roll(x.view(n, s, s, c), (-self.shift, -self.shift), (1, 2))
        windows = grid.view(n, k, w, k, w, c).transpose(2, 3).reshape(n * k * k, w * w, c)
        grid = self.inner(windows).view(n, k, k, w, w, c).transpose(2, 3).reshape(n, s, s, c)
        return torch.roll(grid, (self.shift, self.shift), (1, 2)).reshape(n, s * s, c)


def swin() -> nn.Module:
    """Window attention (a fused qkv projection, as Swin's) on an 8x8 token grid, windows of
    4x4, the second block's windows cyclically shifted by 2."""
    return PatchNet(16, 2, [PreNormBlock(16, Windowed(FusedAttention(16, 4), 8, 4, shift))
                            for shift in (0, 2)])


def mha_encoder() -> nn.Module:
    """torchvision's ViT encoder blocks: nn.MultiheadAttention as self-attention."""
    return PatchNet(16, 4, [PreNormBlock(16, SelfAttention(16, 4)) for _ in range(2)])


class GroupedQueryAttention(nn.Module):
    """Causal attention, separate q/k/v projections, 4 query heads sharing 2 key/value heads
    (repeat_interleave); not registered with prunesearch (a user's own module)."""

    def __init__(self, dim: int, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = (p(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
                .repeat_interleave(self.heads // self.kv_heads, dim=1) for p in (self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): Llama's MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Decoder(nn.Module):
    """Llama-style decoder over the 12 rows of a 1x12x12 image (tokens of 12 features): RMS
    norms, grouped-query attention, SwiGLU; per-token outputs (N x 12 x 10)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.blocks = nn.Sequential(*[PreNormBlock(dim, GroupedQueryAttention(dim),
                                                   SwiGLU(dim, 2 * dim), nn.RMSNorm)
                                      for _ in range(2)])
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x.squeeze(1)))))

    def depth_stages(self) -> list[tuple[str, nn.Sequential]]:
        return [("blocks", self.blocks)]


# --- the corpus --------------------------------------------------------------------------------
GRAY, RGB, SIGNAL = (1, 12, 12), (3, 16, 16), (1, 64)


def _limit(reason: str, raises: type[Exception]) -> pytest.MarkDecorator:
    """A prunesearch limitation or bug this case runs into (strict: fixing it turns the case
    red, and only `raises` counts as the expected failure)."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


CORPUS = [
    pytest.param(densenet, GRAY, id="densenet"),
    pytest.param(resnext, GRAY, id="resnext"),
    pytest.param(regnet, GRAY, id="regnet"),
    pytest.param(mobilenet_v3, RGB, id="mobilenet_v3"),
    pytest.param(efficientnet, RGB, id="efficientnet"),
    pytest.param(ShuffleNet, GRAY, id="shufflenet_v2"),
    pytest.param(inception, GRAY, id="inception"),
    pytest.param(convnext, RGB, id="convnext"),
    pytest.param(UNet, RGB, id="unet"),
    pytest.param(partial(UNet, transposed=True), RGB, id="unet_transposed_conv"),
    pytest.param(mlp_mixer, RGB, id="mlp_mixer"),
    pytest.param(swin, RGB, id="swin"),
    pytest.param(vit, RGB, id="vit"),
    pytest.param(mha_encoder, RGB, id="mha_encoder"),
    pytest.param(Decoder, GRAY, id="gqa_decoder"),
    pytest.param(ConvGRU, GRAY, id="conv_gru"),
    pytest.param(SharedConv, GRAY, id="shared_conv"),
    pytest.param(InPlaceFPN, GRAY, id="inplace_interpolate"),
    pytest.param(vgg, GRAY, id="vgg"),
    pytest.param(group_norm_net, GRAY, id="groupnorm"),
    pytest.param(se_resnet, GRAY, id="se_resnet"),
    pytest.param(conv1d_net, SIGNAL, id="conv1d"),
    pytest.param(GroupedReadsConcat, GRAY, id="grouped_reads_concat"),
]


def _example(shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed batch of 4 inputs of `shape`."""
    return torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))


def _space(model: nn.Module, example: torch.Tensor, build: Callable[[], nn.Module]) -> Space:
    """`check_against_masked_model`'s space; a model with nothing to search must say why, each
    coupling it keeps whole named with its reason."""
    try:
        return check_against_masked_model(model, example, build)
    except ModelError as err:
        if "nothing to search" in str(err):
            assert "is kept whole:" in str(err), err
        raise


def _export(model: nn.Module, space: Space, example: torch.Tensor, folder: Path) -> None:
    """Export the half-width subnetwork as prunesearch does (pt, TorchScript, ONNX, each checked
    against PyTorch), then load it back from the folder and check the files again."""
    arch = space.uniform(0.5)
    sliced = space.slicer(model).build(arch).eval()
    with torch.no_grad():
        out = sliced(example)
    spec = {"model": GIVEN_MODEL, "width_mult": 1.0, "input_shape": list(example.shape[1:]),
            "num_classes": int(out.shape[-1]), "arch": arch.to_dict()}
    meta = write_export(sliced, spec, {}, folder, ["pt", "ts", "onnx"], example, full=model)
    checks = meta["checks"]
    assert checks["pt"]["max_abs_diff"] == 0 and checks["ts"]["max_abs_diff"] <= 1e-5, checks
    assert checks["onnx"]["max_abs_diff"] <= ONNX_TOLERANCE, checks
    loaded = load(folder, model=model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(example), out, rtol=0, atol=0)
    check_exported_formats(folder, loaded, example)


@pytest.mark.parametrize(("build", "shape"), CORPUS)
def test_corpus_network_is_searched_sliced_and_exported(
        build: Callable[[], nn.Module], shape: tuple[int, ...], tmp_path: Path) -> None:
    """Space built (kept-whole couplings with a reason), slices equal to the masked supernet
    at torch-pruning's costs, the half-width subnetwork exported to pt, TorchScript, ONNX."""
    torch.manual_seed(0)
    model = with_norm_statistics(build())
    example = _example(shape)
    space = _space(model, example, build)
    for name, why in space.kept_whole:
        assert why, name
    assert any(d.kind == "width" for d in space.dims) or space.depth_stages()
    _export(model, space, example, tmp_path / "export")


def test_couplings_that_cannot_be_cut_stay_whole_and_the_rest_is_searched() -> None:
    """ShuffleNetV2: the first unit's output is split by the next unit after a shuffle."""
    space = Space.from_model(ShuffleNet().eval(), _example(GRAY))
    assert any(d.kind == "width" for d in space.dims)
    names = dict(space.kept_whole)
    assert "units.0.branch.5" in names and "fails" in names["units.0.branch.5"]
    slicer = space.slicer(ShuffleNet().eval())
    for seed in range(8):
        arch = space.sample(np.random.default_rng(seed))
        assert slicer.build(arch)(_example(GRAY)).shape == (4, 10)


def test_densenet_concatenated_channels_are_searched() -> None:
    """Growth channels, stem and transition widths of a DenseNet (concatenations read by
    BatchNorms, which hold a group's channels at an offset) are width dimensions, not kept
    whole; the TAS supernet mixes such a group's part of a concatenation and leaves the rest:
    at the full choices it is the dense model."""
    torch.manual_seed(0)
    model = with_norm_statistics(densenet()).eval()
    x = _example(GRAY)
    space = Space.from_model(model, x)
    assert space.kept_whole == [] and space.width_groups()
    net = Supernet(space, model, space.channel_order()).eval()
    net.sample = {d: [(len(dim.choices) - 1, torch.tensor(1.0))]
                  for d, dim in enumerate(space.dims)}
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
        net.sample = {d: [(0, torch.tensor(0.5)), (len(dim.choices) - 1, torch.tensor(0.5))]
                      for d, dim in enumerate(space.dims)}
        assert net(x).shape == (x.shape[0], 10)


def test_prunesearch_space_lists_the_couplings_kept_whole() -> None:
    """`prunesearch space` prints the couplings kept whole."""
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
