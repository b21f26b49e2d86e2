"""A small vision transformer (Dosovitskiy et al. 2021) for 28x28 inputs.

Patches of 4x4 pixels embedded by a strided conv, a learned position embedding (an
`nn.Embedding`, so its width is pruned with the residual stream), pre-norm blocks of multi-head
self-attention and a GELU MLP, a final LayerNorm, mean pooling over tokens and a linear head.
Every block maps tokens to tokens of the same shape, so trailing blocks are droppable (depth
search); heads (spaces/attention.py), MLP widths and the embedding width are width dimensions.
The attention reads its head count from its projections' sizes, so a sliced copy needs no
attribute updated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.models._layers import scale_width
from prunesearch.models.registry import register_model
from prunesearch.spaces.attention import HeadLayout, register_attention

EMBED, DEPTH, HEADS, MLP_RATIO, PATCH = 64, 4, 4, 2, 4


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, heads * head_dim)
        self.v = nn.Linear(dim, heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, self.head_dim).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


register_attention(Attention, layout=lambda m: HeadLayout(
    "q", "k", "v", "proj", m.q.out_features // m.head_dim, m.k.out_features // m.head_dim,
    m.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, input_size: tuple[int, ...],
                 width_mult: float = 1.0) -> None:
        super().__init__()
        dim = scale_width(EMBED, width_mult)
        dim -= dim % HEADS  # whole heads
        if len(input_size) != 2 or any(s % PATCH for s in input_size):
            raise ModelError(f"vit_tiny needs an image whose sides are multiples of {PATCH}, "
                             f"got input size {input_size}")
        tokens = (input_size[0] // PATCH) * (input_size[1] // PATCH)
        self.patch = nn.Conv2d(in_chans, dim, PATCH, stride=PATCH)
        self.pos = nn.Embedding(tokens, dim)
        self.register_buffer("positions", torch.arange(tokens), persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, HEADS, MLP_RATIO * dim) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def depth_stages(self) -> list[tuple[str, nn.Sequential]]:
        return [("blocks", self.blocks)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos(self.positions)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


@register_model("vit_tiny")
def vit_tiny(in_chans: int, num_classes: int, width_mult: float = 1.0,
             input_size: tuple[int, ...] = (28, 28)) -> VisionTransformer:
    return VisionTransformer(in_chans, num_classes, input_size, width_mult)
