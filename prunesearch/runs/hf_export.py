"""`--format hf`: a pruned Hugging Face transformer saved with `save_pretrained`, its config
edited to the kept sizes, so that `AutoModelFor...from_pretrained` loads it back.

A Hugging Face config holds one size per kind for every layer (attention heads, key/value
heads, MLP width, hidden width, layer count), so only a network pruned alike in every layer
can leave this way: every point of a `space.layer_uniform` search, the uniform strategy's
points, or any point that happens to be so; any other is refused with the sizes that differ.
The folder is checked by loading it back with `from_pretrained` and comparing outputs with the
exported network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.errors import ModelError, UserError

HF_TOLERANCE = 1e-4


def _pretrained(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the Hugging Face model inside `model` (the model itself: name "")."""
    try:
        from transformers import PreTrainedModel
    except ImportError:
        PreTrainedModel = None  # noqa: N806
    if PreTrainedModel is not None:
        for name, module in model.named_modules():
            if isinstance(module, PreTrainedModel):
                return name, module
    raise UserError("--format hf writes a Hugging Face model, and this network holds none "
                    "(transformers' PreTrainedModel); export pt, ts or onnx.")


def _layers(hf: nn.Module) -> nn.ModuleList:
    """The model's list of transformer layers: the ModuleList whose layers hold attention."""
    for module in hf.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                _attention(layer) is not None for layer in module):
            return module
    raise ModelError(f"--format hf found no list of attention layers in "
                     f"{type(hf).__name__}; export pt, ts or onnx.")


def _attention(layer: nn.Module) -> nn.Module | None:
    return next((m for m in layer.modules() if isinstance(getattr(m, "q_proj", None), nn.Linear)
                 and isinstance(getattr(m, "k_proj", None), nn.Linear)), None)


def _mlp_width(layer: nn.Module) -> int:
    for name in ("gate_proj", "up_proj", "fc1"):
        proj = next((m for n, m in layer.named_modules() if n.endswith(f"mlp.{name}")), None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
    raise ModelError(f"--format hf found no MLP (gate_proj, up_proj or fc1) in "
                     f"{type(layer).__name__}; export pt, ts or onnx.")


def _sizes(layer: nn.Module) -> dict[str, int]:
    attn = _attention(layer)
    head_dim = int(attn.head_dim)
    return {"hidden_size": attn.q_proj.in_features,
            "num_attention_heads": attn.q_proj.out_features // head_dim,
            "num_key_value_heads": attn.k_proj.out_features // head_dim,
            "head_dim": head_dim, "intermediate_size": _mlp_width(layer)}


def edited_config(hf: nn.Module) -> Any:
    """The model's config with the sizes its (pruned) layers keep; a ModelError naming the
    sizes when the layers do not keep the same ones."""
    layers = _layers(hf)
    sizes = [_sizes(layer) for layer in layers]
    differ = {k for s in sizes for k, v in s.items() if v != sizes[0][k]}
    if differ:
        per_layer = "; ".join(f"layer {i}: " + ", ".join(f"{k} {s[k]}" for k in sorted(differ))
                              for i, s in enumerate(sizes))
        raise ModelError(f"--format hf: a Hugging Face config holds one size per kind for every "
                         f"layer, but this network's layers differ ({per_layer}). Search with "
                         f"space.layer_uniform = true (one choice per kind for all layers), "
                         f"or export pt, ts or onnx.")
    config = copy.deepcopy(hf.config)
    for key, value in {**sizes[0], "num_hidden_layers": len(layers)}.items():
        if key != "num_key_value_heads" or hasattr(config, key):
            setattr(config, key, value)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:len(layers)]
    return config


def export_hf(model: nn.Module, example: torch.Tensor, expected: torch.Tensor,
              folder: Path) -> dict[str, Any]:
    """Save the Hugging Face model inside `model` to `folder` with its edited config, load it
    back with from_pretrained into a copy of `model` and compare outputs."""
    name, hf = _pretrained(model)
    config = edited_config(hf)
    saved = copy.deepcopy(hf)
    saved.config = config
    saved.save_pretrained(folder)
    try:
        loaded = type(hf).from_pretrained(folder).eval()
    except Exception as err:  # transformers raises many kinds on a config that does not fit
        raise ModelError(f"--format hf: from_pretrained cannot load the saved folder back "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); its "
                         f"config cannot express this pruning. Export pt, ts or onnx.") from None
    again = copy.deepcopy(model)
    if name:
        again.set_submodule(name, loaded)
    else:
        again = loaded
    with torch.no_grad():
        got = again(example)
    diff = float((got - expected).abs().max())
    if diff > HF_TOLERANCE:
        raise ModelError(f"--format hf: the model loaded back with from_pretrained differs "
                         f"from the exported network by {diff:.2e} (> {HF_TOLERANCE}); its "
                         f"config cannot express this pruning. Export pt, ts or onnx.")
    return {"class": type(hf).__name__, "max_abs_diff": diff, "tolerance": HF_TOLERANCE,
            "sizes": {k: getattr(config, k) for k in ("hidden_size", "intermediate_size",
                                                      "num_attention_heads", "head_dim",
                                                      "num_hidden_layers")}}
