"""What the Space needs to know of Hugging Face transformers layers; imported by the graph
only for a model holding a transformers module (importing transformers takes seconds).

Llama's RMS norm is a per-channel scale, sliced like `nn.RMSNorm`. Llama's and ViT's attention
read their head counts from their projections' sizes (Llama keeps the query-per-key/value-head
ratio, which whole key/value groups preserve), so only ViT's informative head count is updated.
ViT's class token and position table are parameter members of the embedding's group (graph.py).
"""

from __future__ import annotations

from torch import nn
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm
from transformers.models.vit.modeling_vit import ViTAttention

from prunesearch.spaces.attention import HeadLayout, register_attention
from prunesearch.spaces.layers import register_layer, slice_scale_norm

register_layer(LlamaRMSNorm, cost="rmsnorm", slicer=slice_scale_norm)


def _projections(m: nn.Module) -> HeadLayout:
    return HeadLayout("q_proj", "k_proj", "v_proj", "o_proj", m.q_proj.out_features // m.head_dim,
                      m.k_proj.out_features // m.head_dim, m.head_dim)


def _vit_heads(m: nn.Module) -> None:
    m.num_attention_heads = m.q_proj.out_features // m.head_dim  # read by nothing but repr


register_attention(LlamaAttention, layout=_projections)
register_attention(ViTAttention, layout=_projections, resize=_vit_heads)
