"""Weight-mask baselines run end to end on synthetic data: global-magnitude and dp through the
weight-sharing evaluator; random-masks, imp and bip train their own networks, whose exact
masks, costs, epochs and seconds land in the archive and finetune.csv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunesearch.app.config import load_config
from prunesearch.app.finetune import finetune_run
from prunesearch.app.run import run_job
from prunesearch.errors import UserError
from prunesearch.models import build_model
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.spaces.masks import kept_weights, maskable_layers
from prunesearch.strategies.trained import ImpStrategy, rewind

TINY = Path(__file__).parent / "configs" / "tiny_masks.toml"


def _run(tmp_path: Path, *overrides: str):
    cfg = load_config(TINY, list(overrides))
    outcome = run_job(cfg, tmp_path / cfg.name, progress=False)
    return outcome, read_journal(outcome.run_dir / "candidates.csv")


def _weights(run_dir: Path, row: dict) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / row["weights"], weights_only=True)


def test_global_magnitude_sweeps_densities_and_fine_tunes_with_masks(tmp_path):
    outcome, cands = _run(tmp_path, "search.strategy=global-magnitude",
                          "finetune.targets=[0.6]")
    assert len(cands) == 6
    macs = [c.result.macs for c in cands]
    assert macs[1:] == sorted(macs[1:], reverse=True)  # the sweep goes from dense to sparse
    # the target (search.masks.densities = [0.3]) comes first, at most 30% of the weights
    assert cands[0].result.params < 0.3 * outcome.summary["dense"]["params"] + 2000
    assert "SPARSE" in outcome.summary["macs_convention"]
    rows = read_finetuned(outcome.run_dir)
    assert rows and rows[0]["macs_ratio"] <= 0.6
    # the fine-tuned model keeps exactly its arch's masks
    arch = next(c.result.arch for c in cands if c.id == rows[0]["id"]).to_dict()
    state = _weights(outcome.run_dir, rows[0])
    for name, density in arch.items():
        w = state[name.removeprefix("density:") + ".weight"]
        assert int(torch.count_nonzero(w)) == kept_weights(w.numel(), density)


def test_imp_prunes_a_fifth_per_round_and_rewinds_exactly(tmp_path):
    outcome, cands = _run(tmp_path, "search.strategy=imp", "search.budget=3")
    rows = read_finetuned(outcome.run_dir)
    assert [r["variant"] for r in rows] == ["imp"] * 3 and len(cands) == 3
    assert [r["epochs"] for r in rows] == [1, 2, 3]  # cost counts every earlier round
    assert rows[0]["seconds"] < rows[1]["seconds"] < rows[2]["seconds"]
    layers = None
    for r, expected in zip(rows, (1.0, 0.8, 0.64), strict=True):
        state = _weights(outcome.run_dir, r)
        weights = {k.removesuffix(".weight"): v for k, v in state.items()
                   if k.endswith(".weight") and v.dim() > 1}
        layers = layers or list(weights)
        kept = sum(int(torch.count_nonzero(w)) for w in weights.values())
        assert kept / sum(w.numel() for w in weights.values()) == pytest.approx(expected,
                                                                              abs=0.005)
    saved = torch.load(outcome.run_dir / f"{ImpStrategy.STATE}.pt", weights_only=True)
    assert saved["round"] == 2
    net = build_model("resnet20", (1, 8, 8), 4, 0.5)
    net.load_state_dict(saved["model"])
    rewind(net, saved["rewind"], saved["masks"])
    for name, value in net.state_dict().items():
        layer = name.removesuffix(".weight")
        if layer in saved["masks"]:
            mask = saved["masks"][layer]
            assert torch.equal(value[mask], saved["rewind"][name][mask])
            assert not value[~mask].any()
        else:
            assert torch.equal(value, saved["rewind"][name])
    assert not torch.equal(saved["rewind"]["stem.0.weight"], saved["model"]["stem.0.weight"])
    with pytest.raises(UserError, match="trains its networks itself"):
        finetune_run(outcome.run_dir, [], progress=False)


def test_bip_and_random_masks_meet_their_densities(tmp_path):
    for strategy in ("bip", "random-masks"):
        outcome, cands = _run(tmp_path / strategy, f"search.strategy={strategy}")
        rows = read_finetuned(outcome.run_dir)
        assert len(rows) == len(cands) == 1 and rows[0]["variant"] == strategy
        state = _weights(outcome.run_dir, rows[0])
        for layer in maskable_layers(build_model("resnet20", (1, 8, 8), 4, 0.5)):
            w = state[f"{layer}.weight"]
            assert int(torch.count_nonzero(w)) == kept_weights(w.numel(), 0.3), layer
        assert cands[0].result.params < outcome.summary["dense"]["params"] * 0.4
        assert outcome.summary["finetune"]["variants"][strategy]["points"]


def test_trained_strategies_refuse_a_space_without_densities(tmp_path):
    from prunesearch.errors import ConfigError

    with pytest.raises(ConfigError, match="space.densities"):
        _run(tmp_path, "search.strategy=imp", "space.densities=[]",
             "space.width_ratios=[0.5, 1.0]")
