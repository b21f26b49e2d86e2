"""Hugging Face transformers models: what prunesearch needs to know of their layers, and tiny
models built from a config (random weights, nothing downloaded).

Importing this module registers Llama's RMS norm (a per-channel scale, sliced like
`nn.RMSNorm`) and its attention (q/k/v/o projections; the module reads head counts from the
projections' sizes and keeps the query-per-key/value-head ratio, which whole key/value groups
preserve, so no attribute needs updating). The Space imports it by itself when a model holds
a transformers module. Requires the `transformers` extra.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm

from prunesearch.spaces.attention import HeadLayout, register_attention
from prunesearch.spaces.layers import register_layer, slice_scale_norm

register_layer(LlamaRMSNorm, cost="rmsnorm", slicer=slice_scale_norm)
register_attention(LlamaAttention, layout=lambda m: HeadLayout(
    "q_proj", "k_proj", "v_proj", "o_proj", m.q_proj.out_features // m.head_dim,
    m.k_proj.out_features // m.head_dim, m.head_dim))


class CausalLM(nn.Module):
    """A causal language model as a plain module: token ids (batch, time) -> logits (batch,
    time, vocab), no cache; what the Space, the evaluators and export work with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits


def tiny_llama(vocab_size: int = 256, hidden_size: int = 64, layers: int = 4, heads: int = 4,
               kv_heads: int = 2, intermediate_size: int = 176, context: int = 128) -> CausalLM:
    """A small LlamaForCausalLM (grouped-query attention, SwiGLU MLP, RMS norms, rotary
    positions), randomly initialized from a LlamaConfig."""
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=context, tie_word_embeddings=False)
    return CausalLM(LlamaForCausalLM(config))
