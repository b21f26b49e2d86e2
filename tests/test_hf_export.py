"""`--format hf`: a pruned grouped-query Llama and a pruned ViT leave as save_pretrained folders
that AutoModelFor...from_pretrained loads back, computing what the pruned network computes."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from masked_reference import check_against_masked_model, with_norm_statistics
from torch import nn

from prunesearch.errors import ModelError, UserError
from prunesearch.runs.export import write_export
from prunesearch.runs.hf_export import export_hf
from prunesearch.spaces import Space

transformers = pytest.importorskip("transformers")
from prunesearch.models.hf import CausalLM, ImageClassifier, tiny_llama, vit  # noqa: E402


def _pruned(model: nn.Module, example: torch.Tensor, ratio: float) -> tuple[Space, nn.Module]:
    torch.manual_seed(0)
    space = Space.from_model(model.eval(), example)
    return space, space.slicer(model).build(space.uniform(ratio)).eval()


def test_a_pruned_grouped_query_llama_loads_back_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    model = tiny_llama(heads=4, kv_heads=2)
    tokens = torch.randint(0, 256, (2, 16))
    _, sub = _pruned(model, tokens, 0.5)
    with torch.no_grad():
        expected = sub(tokens)
    check = export_hf(sub, tokens, expected, tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    assert config["intermediate_size"] < 176 and config["hidden_size"] < 64
    with torch.no_grad():
        torch.testing.assert_close(CausalLM(loaded)(tokens), expected, atol=1e-4, rtol=1e-4)
    assert check["max_abs_diff"] <= check["tolerance"]


def test_a_pruned_vit_loads_back_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    images = torch.randn(2, 1, 28, 28)
    space, sub = _pruned(vit(1, 10), images, 0.5)
    with torch.no_grad():
        expected = sub(images)
    spec = {"model": "prunesearch.models.hf:vit", "width_mult": 1.0, "input_shape": [1, 28, 28],
            "num_classes": 10, "arch": space.uniform(0.5).to_dict()}
    write_export(sub, spec, {}, tmp_path / "out", ["pt", "hf"], images)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["checks"]["hf"]["sizes"]["num_attention_heads"] == 2
    loaded = transformers.AutoModelForImageClassification.from_pretrained(
        tmp_path / "out" / "hf").eval()
    with torch.no_grad():
        np.testing.assert_allclose(ImageClassifier(loaded)(images).numpy(), expected.numpy(),
                                   atol=1e-4)


def test_layers_pruned_differently_or_no_hugging_face_model_are_refused(tmp_path):
    torch.manual_seed(0)
    model = tiny_llama(heads=4, kv_heads=2)
    tokens = torch.randint(0, 256, (2, 16))
    space = Space.from_model(model.eval(), tokens)
    genes = [len(d.choices) - 1 for d in space.dims]
    mlp = next(i for i, d in enumerate(space.dims) if "layers.0.mlp" in d.name)
    genes[mlp] = 0  # the first layer's MLP narrowest, the others whole
    sub = space.slicer(model).build(space.decode(genes)).eval()
    with torch.no_grad(), pytest.raises(ModelError, match="layers differ.*intermediate_size"):
        export_hf(sub, tokens, sub(tokens), tmp_path / "hf")
    plain = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(UserError, match="holds none"):
        export_hf(plain, torch.zeros(1, 4), torch.zeros(1, 3), tmp_path / "plain")


@pytest.mark.parametrize("name", ["llama", "vit"])
def test_a_layer_uniform_space_has_one_choice_per_kind_and_every_point_leaves_as_hf(
        name, tmp_path):
    """space.layer_uniform: one width dimension per kind (hidden, heads, MLP) for all layers;
    its networks compute what the masked supernet computes, cost what torch-pruning counts,
    and any of them (not only uniform ones) loads back with from_pretrained."""
    torch.manual_seed(0)
    if name == "llama":
        make, example = partial(tiny_llama, heads=4, kv_heads=2), torch.randint(0, 256, (2, 16))
    else:
        make, example = partial(vit, 1, 10), torch.randn(2, 1, 28, 28)
    model = with_norm_statistics(make())
    space = check_against_masked_model(model, example, make, layer_uniform=True)
    assert len(space.dims) == 3 and all(len(d.choices) > 1 for d in space.dims)
    assert sum("*" in d.name for d in space.dims) == 2  # heads and MLP of every layer
    arch = space.sample(np.random.default_rng(3))
    sub = space.slicer(model).build(arch).eval()
    with torch.no_grad():
        check = export_hf(sub, example, sub(example), tmp_path / "hf")
    assert check["max_abs_diff"] <= check["tolerance"]
