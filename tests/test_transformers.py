"""Transformers: attention heads, MLP widths, the embedding width (residual stream, every
LayerNorm, the position embedding) and depth are searched. Costs equal torch-pruning's count of
the built network; the built network computes what the dense model computes with the dropped
heads and channels zeroed (the channel-mask supernet, which never slices), and, with every
head kept (torch-pruning cannot prune heads), what torch-pruning's physically pruned network
computes; grouped-query attention keeps key/value heads with their queries; vit_tiny and a
Hugging Face ViT go through search, fine-tuning and export (TorchScript, ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from masked_reference import (
    check_against_masked_model,
    check_exported_formats,
    tp_pruned,
    with_norm_statistics,
)
from torch import nn

import prunesearch
from prunesearch.app.config import load_config
from prunesearch.app.export import export_run
from prunesearch.app.prepare import prepare
from prunesearch.app.run import run_job
from prunesearch.latency import build_latency_model
from prunesearch.models import create_model
from prunesearch.spaces import Arch, Space
from prunesearch.spaces.attention import HeadLayout, register_attention

TINY = Path(__file__).parent / "configs" / "tiny.toml"


class GroupedQueryAttention(nn.Module):
    """Llama-style: 4 query heads share 2 key/value heads; head counts kept in attributes."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (p(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
                for p in (self.k_proj, self.v_proj))
        rep = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def _resize(m: GroupedQueryAttention) -> None:
    m.num_heads = m.q_proj.out_features // m.head_dim
    m.num_kv_heads = m.k_proj.out_features // m.head_dim


register_attention(GroupedQueryAttention, resize=_resize, layout=lambda m: HeadLayout(
    "q_proj", "k_proj", "v_proj", "o_proj", m.num_heads, m.num_kv_heads, m.head_dim))


class TinyDecoder(nn.Module):
    """Token embedding, two pre-norm blocks with grouped-query attention, tied nothing."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(*[nn.ModuleDict({
            "norm1": nn.LayerNorm(dim), "attn": GroupedQueryAttention(dim),
            "norm2": nn.LayerNorm(dim), "up": nn.Linear(dim, 64), "act": nn.GELU(),
            "down": nn.Linear(64, dim)}) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["down"](b["act"](b["up"](b["norm2"](x))))
        return self.lm_head(self.norm(x))


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny", 1, 10)


def _hf_llama() -> nn.Module:
    from prunesearch.models.hf import tiny_llama

    torch.manual_seed(0)
    return tiny_llama(vocab_size=50, hidden_size=32, layers=2, heads=4, kv_heads=2,
                      intermediate_size=48)


def _hf_vit() -> nn.Module:
    from prunesearch.models.hf import vit

    torch.manual_seed(0)
    return vit(1, 10, width_mult=0.5)


def _tokens(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 50, (3, 12), generator=g)


def _images(g: torch.Generator) -> torch.Tensor:
    return torch.randn(3, 1, 28, 28, generator=g)


CASES = [("vit_tiny", _vit, _images), ("gqa decoder", TinyDecoder, _tokens),
         ("hf llama", _hf_llama, _tokens), ("hf vit", _hf_vit, _images)]


@pytest.mark.parametrize(("name", "build", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_heads_and_widths_cost_what_torch_pruning_counts_and_compute_the_masked_model(
        name, build, inputs):
    example = inputs(torch.Generator().manual_seed(2))
    check_against_masked_model(with_norm_statistics(build()), example, build)


@pytest.mark.parametrize(("name", "build", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_channel_widths_compute_what_torch_pruning_pruned_computes(name, build, inputs):
    model = with_norm_statistics(build()).eval()
    example = inputs(torch.Generator().manual_seed(2))
    space = Space.from_model(model, example[:1])
    slicer, rng = space.slicer(model), np.random.default_rng(1)
    for _ in range(3):  # widths random, heads and blocks all kept
        arch = Arch(tuple((n, v if space.unit(d) == "channels" else space.dims[d].full)
                          for d, (n, v) in enumerate(space.sample(rng).values)))
        assert arch != space.largest()
        pruned = tp_pruned(space, model, arch, example[:1])
        with torch.no_grad():
            torch.testing.assert_close(slicer.build(arch).eval()(example), pruned(example),
                                       rtol=0, atol=1e-5)


def test_vit_dimensions_are_heads_mlp_widths_embedding_width_and_depth():
    space = Space.from_model(_vit().eval(), torch.zeros(1, 1, 28, 28))
    kinds = {d.name: (d.kind, d.full) for d in space.dims}
    assert {n: f for n, (k, f) in kinds.items() if n.endswith(".attn")} == {
        f"width:blocks.{b}.attn": 4 for b in range(4)}
    assert {n: f for n, (k, f) in kinds.items() if n.endswith("mlp.0")} == {
        f"width:blocks.{b}.mlp.0": 128 for b in range(4)}
    embedding = [n for n, (k, f) in kinds.items() if k == "width" and f == 64]
    assert len(embedding) == 1  # one residual stream: patch conv, position table, norms
    members = {m.module for _, g in space.width_groups() if g.name == embedding[0][6:]
               for m in g.members}
    assert {"patch", "pos", "norm", "blocks.0.norm1", "blocks.3.mlp.2"} <= members
    assert kinds["depth:blocks"] == ("depth", 4)
    units = {space.unit(d) for d, dim in enumerate(space.dims) if dim.name.endswith(".attn")}
    assert units == {"heads"}


def test_hf_vit_class_token_and_position_table_go_with_the_embedding_width():
    space = Space.from_model(_hf_vit().eval(), torch.zeros(1, 1, 28, 28))
    members = [{m.module for m in g.members} for _, g in space.width_groups()]
    embedding = [m for m in members if "model.vit.embeddings.cls_token" in m]
    assert len(embedding) == 1
    assert {"model.vit.embeddings.position_embeddings",
            "model.vit.embeddings.patch_embeddings.projection",
            "model.vit.layernorm"} <= embedding[0]
    heads = [d for d in space.dims if d.name.endswith(".attention")]
    assert len(heads) == 4 and {space.unit(space.dims.index(d)) for d in heads} == {"heads"}
    smallest = space.slicer(_hf_vit()).build(space.smallest())
    assert smallest.model.vit.embeddings.cls_token.shape[-1] == min(
        d.choices[0] for d in space.dims if d.full == 32)


def test_grouped_query_heads_go_with_their_queries():
    model = with_norm_statistics(TinyDecoder())
    space = Space.from_model(model, torch.randint(0, 50, (1, 12)))
    dim = next(d for d in space.dims if d.name == "width:blocks.0.attn")
    assert (dim.full, dim.choices) == (2, (1, 2))  # key/value heads
    assert space.unit(space.dims.index(dim)) == "key/value heads"
    arch = Arch(tuple((n, 1 if n == dim.name else v) for n, v in space.largest().values))
    attn = space.slicer(model).build(arch).blocks[0]["attn"]
    assert (attn.num_heads, attn.num_kv_heads) == (2, 1)
    assert attn.q_proj.out_features == 2 * attn.head_dim == attn.o_proj.in_features


@pytest.mark.parametrize("model", ["vit_tiny", "prunesearch.models.hf:vit"])
def test_a_vit_is_searched_finetuned_and_exported(model, tmp_path):
    cfg = load_config(TINY, [f"model.name='{model}'", "model.width_mult=1.0",
                             "model.train.lr=0.05", "search.budget=8",
                             "finetune.targets=[0.5]", "finetune.epochs=1"])
    run_dir = run_job(cfg, tmp_path / "runs", device="cpu", progress=False).run_dir
    folder = export_run(run_dir, None, ("macs", 0.5), ["pt", "ts", "onnx"], tmp_path / "exp",
                        progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert "not fine-tuned" not in meta["source"], meta["source"]
    arch = Arch.from_dict(meta["arch"])
    loaded = prunesearch.load(folder)
    prep = prepare(load_config(run_dir / "config.toml"), torch.device("cpu"), progress=False)
    assert meta["macs"] == prep.space.macs(arch) and meta["macs_ratio"] <= 0.5
    assert sum(p.numel() for p in loaded.parameters()) == meta["params"]
    check_exported_formats(folder, loaded, prep.data.val_x[:16])


@pytest.mark.parametrize(("name", "build", "inputs"), [CASES[0], CASES[2]],
                         ids=[CASES[0][0], CASES[2][0]])
def test_latency_tables_time_embeddings_norms_and_heads(name, build, inputs, tmp_path):
    model = build().eval()
    example = inputs(torch.Generator().manual_seed(2))[:1]
    space = Space.from_model(model, example)
    table = build_latency_model(space, model, 2, torch.device("cpu"), cache_dir=tmp_path,
                                repeats=1)
    kinds = {call.kind for call in space.cost.calls}
    assert {"embedding", "linear"} <= kinds and kinds & {"layernorm", "rmsnorm"}
    # every call of every arch has an entry (timed, or scaled from its dense entry)
    rng = np.random.default_rng(0)
    assert all(table.predict(space.sample(rng)) > 0 for _ in range(4))
