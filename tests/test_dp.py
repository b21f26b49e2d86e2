"""The `dp` strategy: the dynamic program is exactly optimal (checked by brute force), and on a
real masked space its allocations meet their targets and beat uniform allocations."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from prunesearch.evaluators import WeightSharingEvaluator
from prunesearch.models import create_model
from prunesearch.spaces import Space
from prunesearch.strategies import Budget, Environment, Problem, SearchContext, create_strategy
from prunesearch.strategies.dp import TABLE, allocate


@pytest.mark.parametrize("seed", range(6))
def test_dp_allocation_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    dims, choices = 4, 3 + seed % 2
    distortion = rng.random((dims, choices)) * 10
    weights = rng.integers(0, 8, (dims, choices))
    max_bins = int(weights.max(1).sum())
    solution = allocate(distortion, weights, max_bins)
    for bins in range(max_bins + 1):
        feasible = [(sum(distortion[d][c] for d, c in enumerate(combo)), combo)
                    for combo in itertools.product(range(choices), repeat=dims)
                    if sum(weights[d][c] for d, c in enumerate(combo)) <= bins]
        genes = solution.genes(bins)
        if not feasible:
            assert genes is None
            continue
        best = min(f for f, _ in feasible)
        assert sum(weights[d][c] for d, c in enumerate(genes)) <= bins
        assert sum(distortion[d][c] for d, c in enumerate(genes)) == pytest.approx(best)
        assert solution.best[bins] == pytest.approx(best)


def test_dp_on_a_masked_space_meets_targets_and_records_additivity(tmp_path):
    torch.manual_seed(0)
    model = create_model("mlp", 1, 10, input_size=(40,)).eval()
    x, y = torch.randn(320, 40), torch.randint(0, 10, (320,))
    space = Space.from_model(model, x[:1], width_ratios=(1.0,), depth=False,
                             densities=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7))
    ev = WeightSharingEvaluator(space, model, x[:128], x[128:], y[128:], batch_size=64)
    recorded = []
    ctx = SearchContext(Problem(space, ev), Environment(recorded.append, tmp_path), Budget(12), 0)
    create_strategy("dp", {"targets": [0.2, 0.5], "additivity_samples": 10,
                           "bins": 500}).search(ctx)
    assert 2 < len(recorded) <= 12 and len({r.arch for r in recorded}) == len(recorded)
    dense = space.dense_macs
    assert recorded[0].macs <= 0.2 * dense and recorded[1].macs <= 0.5 * dense
    assert recorded[1].macs > 0.45 * dense  # the fit uses the budget, not far below it
    saved = json.loads((tmp_path / f"{TABLE}.json").read_text())
    assert saved["additivity"]["samples"] == 10
    assert -1 <= saved["additivity"]["pearson"] <= 1
    # at the same sparse MACs, the minimum-distortion allocation distorts less than uniform
    reference = ev.calibration_logits(space.largest())
    uniform = space.uniform(0.3)
    target = space.macs(uniform) / dense
    fresh = WeightSharingEvaluator(space, model, x[:128], x[128:], y[128:], batch_size=64)
    got = []
    create_strategy("dp", {"targets": [target]}).search(  # reuses the saved table
        SearchContext(Problem(space, fresh), Environment(got.append, tmp_path), Budget(1), 0))
    assert got[0].macs <= space.macs(uniform)

    def distortion(arch):
        return float(((ev.calibration_logits(arch) - reference) ** 2).mean())

    assert distortion(got[0].arch) < distortion(uniform)
