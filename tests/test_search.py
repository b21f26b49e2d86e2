"""Contract tests every strategy must pass (optuna's pytest_samplers idea): in bounds,
deterministic per seed, a failing candidate does not stop the search, the budget is kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from prunesearch.data import load_dataset
from prunesearch.evaluators import Evaluator, Result
from prunesearch.latency.gate import LatencyGate
from prunesearch.models import create_model
from prunesearch.models.options import TrainConfig
from prunesearch.runs.finetuned import TrainedArchive
from prunesearch.spaces import DEFAULT_WIDTH_RATIOS, Arch, Space
from prunesearch.strategies import (
    Budget,
    Environment,
    Problem,
    SearchContext,
    TrainingKit,
    TrainingStrategy,
    create_strategy,
    list_strategies,
)
from prunesearch.strategies.registry import strategy_class


class CostProxyEvaluator(Evaluator):
    """A cheap stand-in score (more MACs, more accuracy) that fails on chosen archs. Strategy
    tests are about the search loop; real scoring is tested in test_evaluator.py."""

    def __init__(self, space: Space, fail_every: int = 0) -> None:
        super().__init__(space)
        self.fail_every = fail_every
        self.calls = 0

    def _score(self, arch: Arch) -> float:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("simulated candidate failure")
        return (self.space.macs(arch) / self.space.dense_macs) ** 0.3

    def calibration_logits(self, arch: Arch) -> torch.Tensor:
        """Stand-in logits for `dp`: the kept fraction of every dimension."""
        return torch.tensor([[v / d.full for d, (_, v) in zip(self.space.dims, arch.values,
                                                                  strict=True)]])


MODEL = create_model("resnet20", 1, 10, width_mult=0.5).eval()
DATA = load_dataset("synthetic", val_size=64)
TINY_RECIPE = TrainConfig(epochs=1, batch_size=32, max_train_images=64)
# Small settings so every registered strategy, the training ones included, runs in seconds;
# a strategy not listed (one registered by a plugin or a test) runs with its defaults.
OPTIONS = {
    "emo": {"pop_size": 6}, "emo-pms": {"pop_size": 6},
    "tas": {"epochs": 1, "targets": [0.5], "max_train_images": 64},
    "dass": {"epochs": 1, "targets": [0.3], "max_train_images": 64},
    "imp": {"epochs": 1, "rewind_steps": 1},
    "random-masks": {"epochs": 1, "densities": [0.5, 0.2]},
    "bip": {"epochs": 1, "densities": [0.5]},
}
TRAINING_BUDGET = 3  # a training strategy's evaluations are whole trained networks


def _fresh_model(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("resnet20", 1, 10, width_mult=0.5)


KIT = TrainingKit(DATA, TINY_RECIPE, torch.device("cpu"), _fresh_model, DATA.val_x, DATA.val_y)


@pytest.fixture(scope="module")
def space() -> Space:
    return Space.from_model(MODEL, torch.zeros(1, 1, 8, 8))


@pytest.fixture(scope="module")
def mixed_space() -> Space:
    """Widths, depths and per-layer densities: every strategy finds the dimensions it needs."""
    return Space.from_model(MODEL, torch.zeros(1, 1, 8, 8), densities=(0.05, 0.2, 0.5))


def _search(space: Space, name: str, tmp: Path, seed: int = 0, budget: int = 20,
            fail_every: int = 0, **options: object) -> tuple[list[Result], CostProxyEvaluator]:
    recorded: list[Result] = []
    evaluator = CostProxyEvaluator(space, fail_every)
    tmp.mkdir(parents=True, exist_ok=True)
    ctx = SearchContext(Problem(space, evaluator, model=MODEL, training=KIT),
                        Environment(recorded.append, tmp, trained=TrainedArchive(tmp)),
                        Budget(budget), seed, batch_size=4)
    strategy_options = {**OPTIONS.get(name, {}), **options}
    create_strategy(name, strategy_options if strategy_class(name).options_model else None
                    ).search(ctx)
    return recorded, evaluator


def _budget(name: str) -> int:
    return TRAINING_BUDGET if strategy_class(name).needs_training else 20


# The package's own strategies: test files (test_plugins) register extra ones into the same
# process-wide registry, and collection order must not decide what this contract covers.
CONTRACT = [name for name in list_strategies()
            if strategy_class(name).__module__.startswith("prunesearch.")]


@pytest.mark.parametrize("name", CONTRACT)
def test_strategy_stays_in_bounds_and_budget(mixed_space, name, tmp_path):
    budget = _budget(name)
    recorded, _ = _search(mixed_space, name, tmp_path, budget=budget)
    assert 0 < len(recorded) <= budget
    # trained networks may round to one grid arch
    if not issubclass(strategy_class(name), TrainingStrategy):
        assert len({r.arch for r in recorded}) == len(recorded)  # each candidate once
    for r in recorded:
        genes = mixed_space.encode(r.arch)
        assert all(0 <= g < b for g, b in zip(genes, mixed_space.bounds(), strict=True))


@pytest.mark.parametrize("name", CONTRACT)
def test_strategy_is_deterministic_per_seed(mixed_space, name, tmp_path):
    a, _ = _search(mixed_space, name, tmp_path / "a", seed=3, budget=_budget(name))
    b, _ = _search(mixed_space, name, tmp_path / "b", seed=3, budget=_budget(name))
    assert [(r.arch, r.macs, r.val_score) for r in a] == [(r.arch, r.macs, r.val_score) for r in b]


@pytest.mark.parametrize("name", CONTRACT)
def test_strategy_survives_failing_candidates(mixed_space, name, tmp_path):
    """Every third evaluation fails (every one, for a training strategy, whose few evaluator
    calls are its final candidates): the failures are recorded and the search goes on."""
    budget = _budget(name)
    trains = strategy_class(name).needs_training
    recorded, evaluator = _search(mixed_space, name, tmp_path, budget=budget,
                                  fail_every=1 if trains else 3)
    failed = [r for r in recorded if not r.ok]
    assert all("simulated" in r.error for r in failed)
    assert len(failed) == evaluator.calls // (1 if trains else 3)  # each failure recorded
    if not trains:
        assert failed
        if name not in ("uniform", "global-magnitude"):  # sweeps may be shorter than budget
            assert len(recorded) == budget


def test_unknown_strategy_lists_the_available_ones():
    from prunesearch.errors import ConfigError

    with pytest.raises(ConfigError, match="available: .*random.*tpe"):
        create_strategy("evolutoin")


def test_sampler_strategies_differ_across_seeds(space, tmp_path):
    a, _ = _search(space, "random", tmp_path / "a", seed=1)
    b, _ = _search(space, "random", tmp_path / "b", seed=2)
    assert [r.arch for r in a] != [r.arch for r in b]


def test_sampler_strategies_start_with_the_uniform_sweep(space, tmp_path):
    recorded, _ = _search(space, "tpe", tmp_path, budget=10)
    sweep = list(dict.fromkeys(space.uniform(r) for r in sorted(DEFAULT_WIDTH_RATIOS,
                                                                  reverse=True)))
    assert [r.arch for r in recorded[:len(sweep)]] == sweep


def test_time_limit_ends_the_search_before_the_evaluation_budget(space, tmp_path, monkeypatch):
    """The search clock is a stand-in that only the evaluations advance (0.125 s each), so the
    count does not depend on how fast the machine sets the study up."""
    import prunesearch.strategies.base as base

    now = [0.0]
    monkeypatch.setattr(base, "time", SimpleNamespace(monotonic=lambda: now[0]))
    recorded: list[Result] = []

    class Slow(CostProxyEvaluator):
        def _score(self, arch: Arch) -> float:
            now[0] += 0.125
            return super()._score(arch)

    ctx = SearchContext(Problem(space, Slow(space)), Environment(recorded.append, tmp_path),
                        Budget(1000, time_limit=1.0), 0, batch_size=4)
    create_strategy("random").search(ctx)
    assert len(recorded) == 8 and ctx.out_of_time()


def test_emo_runs_generations_and_keeps_the_macs_constraint(space, tmp_path):
    from prunesearch.strategies.emo import STATE

    recorded, _ = _search(space, "emo", tmp_path, budget=60, macs_min=0.3, macs_max=0.6)
    assert len(recorded) == 60 and (tmp_path / f"{STATE}.json").exists()
    late = [r.macs / space.dense_macs for r in recorded[30:]]
    inside = sum(0.3 <= x <= 0.6 for x in late) / len(late)
    early = [r.macs / space.dense_macs for r in recorded[:6]]
    assert inside > 0.6 and inside > sum(0.3 <= x <= 0.6 for x in early) / len(early)


def test_emo_resumed_from_its_checkpoint_matches_an_uninterrupted_run(space, tmp_path):
    whole, _ = _search(space, "emo", tmp_path / "whole", budget=30)
    first, evaluator = _search(space, "emo", tmp_path / "cut", budget=14)  # 2 gens + 2 evals
    resumed: list[Result] = []
    fresh = CostProxyEvaluator(space)
    fresh.seed_cache(first)
    ctx = SearchContext(Problem(space, fresh), Environment(resumed.append, tmp_path / "cut"),
                        Budget(30), 0, n_evals=len(first), batch_size=4)
    create_strategy("emo", {"pop_size": 6}).search(ctx)
    assert [r.arch for r in first + resumed] == [r.arch for r in whole]


def test_unknown_emo_algorithm_lists_the_available_ones():
    from prunesearch.errors import ConfigError

    with pytest.raises(ConfigError, match="available: nsga2"):
        create_strategy("emo", {"algorithm": "nsga9"})


@pytest.mark.parametrize("algorithm", ["nsga2", "nsga3", "smsemoa", "moead"])
def test_emo_algorithms_run_several_generations(space, tmp_path, algorithm):
    recorded, _ = _search(space, "emo", tmp_path, budget=24, algorithm=algorithm)
    assert len(recorded) == 24 and len({r.arch for r in recorded}) == 24


def test_emo_pms_splits_resnet_by_stage_and_spends_the_budget_in_phases(space, tmp_path):
    from prunesearch.strategies.emo_pms import SubSpace, split_dimensions

    parts = split_dimensions(space)
    assert len(parts) == 3 and sorted(d for p in parts for d in p) == list(range(len(space.dims)))
    for i, part in enumerate(parts):
        assert all(f"stages.{i}" in space.dims[d].name or "stem" in space.dims[d].name
                   for d in part)
    recorded, _ = _search(space, "emo-pms", tmp_path, budget=48)
    assert len(recorded) == 48 and len({r.arch for r in recorded}) == 48
    owners = [[SubSpace(space, p).owns(r.arch) for p in parts] for r in recorded]
    # phase 1 (after the dense arch): each candidate changes one sub-network only
    assert all(any(o) for o in owners[1:24])
    # combination and refinement change several sub-networks at once
    assert sum(not any(o) for o in owners[24:]) >= 6


def _stand_in_latency(space: Space):
    """A deterministic stand-in for a measured latency table (ranks archs unlike MACs do):
    a per-network overhead plus the kept parameters."""
    return lambda arch: 1000.0 + space.params(arch)


# tas prices latency by the table's expectation, which the stand-in lacks: test_latency.py
# runs it on a real table
LATENCY_STRATEGIES = [n for n in CONTRACT if "latency" in strategy_class(n).axes
                      and not strategy_class(n).needs_training]


@pytest.mark.parametrize("name", LATENCY_STRATEGIES)
def test_strategy_searches_latency_and_keeps_the_latency_limit(space, name, tmp_path):
    from prunesearch.objective import CostAxis

    recorded: list[Result] = []
    evaluator = CostProxyEvaluator(space)
    evaluator.predict_latency = _stand_in_latency(space)
    dense = evaluator.predict_latency(space.largest())
    axis = CostAxis("latency", dense, evaluator.predict_latency)
    gate = LatencyGate(evaluator.predict_latency, 0.5 * dense, 0.5)  # the table decides
    ctx = SearchContext(Problem(space, evaluator, axis, gate, MODEL, KIT),
                        Environment(recorded.append, tmp_path), Budget(20), 0, batch_size=4)
    strategy_options = OPTIONS.get(name, {})
    create_strategy(name, strategy_options if strategy_class(name).options_model else None
                    ).search(ctx)
    assert recorded and len({r.arch for r in recorded}) == len(recorded)
    assert all(r.latency_us == pytest.approx(evaluator.predict_latency(r.arch), abs=1e-3)
               for r in recorded)
    assert max(r.latency_us for r in recorded) <= 0.5 * dense  # the dense arch was refused
    assert ctx.objectives(recorded[0])[1] == pytest.approx(recorded[0].latency_us / dense)


def test_a_latency_search_starts_from_the_width_x_depth_grid(space, tmp_path):
    """Under latency, tpe's first trials are the compound grid's networks that fit the limit
    (those over it are answered at no cost), not the width sweep at full depth."""
    from prunesearch.objective import CostAxis

    recorded: list[Result] = []
    evaluator = CostProxyEvaluator(space)
    evaluator.predict_latency = _stand_in_latency(space)
    dense = evaluator.predict_latency(space.largest())
    axis = CostAxis("latency", dense, evaluator.predict_latency)
    gate = LatencyGate(evaluator.predict_latency, 0.5 * dense, 0.5)  # the table decides
    ctx = SearchContext(Problem(space, evaluator, axis, gate, MODEL, KIT),
                        Environment(recorded.append, tmp_path), Budget(40), 0, batch_size=4)
    create_strategy("tpe").search(ctx)
    grid = [a for a in space.compound_grid() if evaluator.predict_latency(a) <= 0.5 * dense]
    assert any(a not in space.uniform_sweep() for a in grid)  # shallower networks among them
    assert [r.arch for r in recorded[:len(grid)]] == grid


def test_mask_strategies_do_not_claim_latency():
    assert "latency" not in strategy_class("dass").axes
    assert "latency" not in strategy_class("imp").axes
    assert "latency" in strategy_class("tpe").axes


def test_uniform_covers_the_compound_grid_of_widths_and_depths(space, tmp_path):
    """Every (width ratio, blocks kept per stage) pair, the same count in every stage, once;
    depths = "full" keeps the width sweep at full depth."""
    recorded, _ = _search(space, "uniform", tmp_path / "all", budget=200)
    depths = [d for d in space.dims if d.kind == "depth"]
    widths = [d for d in space.dims if d.kind == "width"]
    counts = sorted({c for d in depths for c in d.choices})
    assert depths and len(recorded) == len(space.width_ratios) * len(counts)
    assert len({r.arch for r in recorded}) == len(recorded)
    for r in recorded:
        kept = {r.arch[d.name] for d in depths}
        assert len(kept) == 1  # the same blocks in every stage
        ratios = {round(r.arch[d.name] / d.full, 1) for d in widths}
        assert len(ratios) <= 2  # one ratio, up to each group's rounding to a whole channel
    assert {next(iter({r.arch[d.name] for d in depths})) for r in recorded} == set(counts)
    full, _ = _search(space, "uniform", tmp_path / "full", budget=200, depths="full")
    assert [r.arch for r in full] == space.uniform_sweep()
    assert all(r.arch[d.name] == d.full for r in full for d in depths)
