"""DASS: sparse operations mix magnitude masks, expected sparse MACs match the analytic count,
and a search's chosen densities are met exactly by the fine-tuned model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.app.config import load_config
from prunesearch.app.run import run_job
from prunesearch.models import create_model
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.spaces import Space, layer_densities
from prunesearch.spaces.masks import kept_weights, magnitude_mask
from prunesearch.strategies.dass import soft_mask

TINY = Path(__file__).parent / "configs" / "tiny_masks.toml"


def test_soft_mask_of_a_one_hot_choice_is_the_magnitude_mask():
    w = torch.randn(16, 8, 3, 3)
    choices = (0.1, 0.25, 0.5, 1.0)
    for j, d in enumerate(choices):
        p = torch.nn.functional.one_hot(torch.tensor(j), len(choices)).float()
        assert torch.equal(soft_mask(w, choices, p).bool(), magnitude_mask(w, d))
    mixed = soft_mask(w, choices, torch.tensor([0.4, 0.3, 0.2, 0.1]))
    assert float(mixed.mean()) == pytest.approx(0.4 * 0.1 + 0.3 * 0.25 + 0.2 * 0.5 + 0.1,
                                                abs=2e-3)


def test_expected_sparse_macs_match_the_analytic_count_for_one_hot_densities():
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28), width_ratios=(1.0,),
                             depth=False, densities=(0.1, 0.3, 0.5))
    rng = np.random.default_rng(1)
    for arch in [space.largest(), space.smallest(), space.sample(rng)]:
        densities = {d: torch.tensor(float(v)) for d, (_, v) in enumerate(arch.values)}
        expected = float(space.cost.expected_macs({}, {}, densities))
        assert expected == pytest.approx(space.macs(arch), rel=1e-3)  # rounding of kept weights


def test_dass_search_meets_its_band_and_its_densities_exactly(tmp_path):
    cfg = load_config(TINY, ["search.strategy=dass", "search.dass.targets=[0.3]",
                             "search.dass.epochs=4", "search.dass.arch_lr=0.2",
                             "search.dass.tolerance=0.1", "finetune.targets=[0.45]"])
    outcome = run_job(cfg, tmp_path / "dass", progress=False)
    cands = read_journal(outcome.run_dir / "candidates.csv")
    assert len(cands) == 1
    assert abs(cands[0].result.macs / outcome.summary["dense"]["macs"] - 0.3) <= 0.1
    rows = read_finetuned(outcome.run_dir)
    assert [r["id"] for r in rows] == [cands[0].id]
    state = torch.load(outcome.run_dir / rows[0]["weights"], weights_only=True)
    for layer, density in layer_densities(cands[0].result.arch.to_dict()).items():
        w = state[f"{layer}.weight"]
        assert int(torch.count_nonzero(w)) == kept_weights(w.numel(), density)
    assert (outcome.run_dir / "dass_history.json").exists()
