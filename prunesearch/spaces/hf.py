"""What the Space needs to know of Hugging Face transformers layers; imported by the graph
only for a model holding a transformers module (importing transformers takes seconds).

Llama's RMS norm is a per-channel scale, sliced like `nn.RMSNorm`. Llama's attention reads its
head counts from its projections' sizes and keeps the query-per-key/value-head ratio, which
whole key/value groups preserve, so no attribute needs updating after slicing.
"""

from __future__ import annotations

from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm

from prunesearch.spaces.attention import HeadLayout, register_attention
from prunesearch.spaces.layers import register_layer, slice_scale_norm

register_layer(LlamaRMSNorm, cost="rmsnorm", slicer=slice_scale_norm)
register_attention(LlamaAttention, layout=lambda m: HeadLayout(
    "q_proj", "k_proj", "v_proj", "o_proj", m.q_proj.out_features // m.head_dim,
    m.k_proj.out_features // m.head_dim, m.head_dim))
