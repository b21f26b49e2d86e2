"""Hugging Face transformers models built from a config (random weights, nothing downloaded),
as plain modules prunesearch works with. What the Space needs to know of their layers is in
prunesearch/spaces/hf.py. Requires the `transformers` extra. The factories (a job's
model.name) `prunesearch.models.hf:llama` builds `tiny_llama` for a dataset of token sequences,
e.g. "stdlib-bytes", and `prunesearch.models.hf:vit` builds `tiny_vit` for images.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTForImageClassification

from prunesearch.errors import ModelError


class CausalLM(nn.Module):
    """A causal language model as a plain module: token ids (batch, time) -> logits (batch,
    time, vocab), no cache; what the Space, the evaluators and export work with. Ids of any
    numeric dtype are taken (a probe of zeros from a shape alone is token 0 everywhere)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        # an explicit all-ones mask: without one transformers looks for packed sequences
        # (torch.diff), which ONNX cannot export
        return self.model(input_ids=tokens, attention_mask=torch.ones_like(tokens),
                          use_cache=False).logits


class ImageClassifier(nn.Module):
    """An image classifier as a plain module: images -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


def tiny_vit(in_chans: int = 1, num_classes: int = 10, image_size: int = 28, patch: int = 4,
             hidden_size: int = 64, layers: int = 4, heads: int = 4,
             intermediate_size: int = 128) -> ImageClassifier:
    """A small ViTForImageClassification (class token, learned position table, pre-norm
    blocks), randomly initialized from a ViTConfig."""
    config = ViTConfig(image_size=image_size, patch_size=patch, num_channels=in_chans,
                       hidden_size=hidden_size, num_hidden_layers=layers,
                       num_attention_heads=heads, intermediate_size=intermediate_size,
                       num_labels=num_classes, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    return ImageClassifier(ViTForImageClassification(config))


def tiny_llama(vocab_size: int = 256, hidden_size: int = 64, layers: int = 4, heads: int = 4,
               kv_heads: int = 2, intermediate_size: int = 176, context: int = 128) -> CausalLM:
    """A small LlamaForCausalLM (grouped-query attention, SwiGLU MLP, RMS norms, rotary
    positions), randomly initialized from a LlamaConfig."""
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=context, tie_word_embeddings=False)
    return CausalLM(LlamaForCausalLM(config))


def llama(in_chans: int, num_classes: int, width_mult: float = 1.0,
          input_size: tuple[int, ...] = (64,)) -> CausalLM:
    """The model factory `prunesearch.models.hf:llama`: `tiny_llama` over the dataset's
    vocabulary (its classes) and context (its example length); width_mult scales the hidden
    and MLP widths."""
    if len(input_size) != 1:
        raise ModelError(f"prunesearch.models.hf:llama reads token sequences (examples of "
                         f"shape (T,)), not inputs of shape {(in_chans, *input_size)}; use a "
                         f"text dataset such as 'stdlib-bytes'.")
    hidden = max(8, round(64 * width_mult / 8) * 8)
    return tiny_llama(vocab_size=num_classes, hidden_size=hidden,
                      intermediate_size=round(hidden * 11 / 4), context=input_size[0])


def vit(in_chans: int, num_classes: int, width_mult: float = 1.0,
        input_size: tuple[int, ...] = (28, 28)) -> ImageClassifier:
    """The model factory `prunesearch.models.hf:vit`: `tiny_vit` (patch 4) over square images
    whose side is a multiple of 4; width_mult scales the hidden and MLP widths."""
    if len(input_size) != 2 or input_size[0] != input_size[1] or input_size[0] % 4:
        raise ModelError(f"prunesearch.models.hf:vit reads square images whose side is a "
                         f"multiple of 4 (patch 4), not inputs of shape "
                         f"{(in_chans, *input_size)}; use an image dataset such as "
                         f"'fashion-mnist'.")
    hidden = max(16, round(64 * width_mult / 16) * 16)  # 4 heads of a whole head dimension
    return tiny_vit(in_chans, num_classes, input_size[0], hidden_size=hidden,
                    intermediate_size=2 * hidden)
