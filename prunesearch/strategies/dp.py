"""`dp`: layer-adaptive allocation by dynamic programming over additive output distortion.

"Efficient Joint Optimization of Layer-Adaptive Weight Pruning in Deep Neural Networks" observes
that the output distortion of pruning several layers is close to the SUM of the distortions of
pruning each alone. Then choosing one value per dimension to minimise total distortion under a
cost budget is a multiple-choice knapsack, solved exactly by dynamic programming.

1. Distortion table: for every dimension d and choice c, the mean squared difference of the
   network's logits on the calibration images (training split) when only d is set to c (the
   candidate built as the evaluator builds it, BatchNorm recalibrated). Works for density,
   width and depth dimensions alike. Saved to dp_distortion.json, reused on resume.
2. Additivity check: on random multi-dimension archs, measured distortion against the sum of
   the single-dimension ones; Pearson and Spearman correlations are logged and saved.
3. Costs: each choice's saving when only its dimension changes. For density dimensions these
   add up exactly; width savings do not (a conv's MACs are a product of two groups), so a
   solution is checked against the Space's true cost and the bin budget lowered until it fits.
4. One table for ALL budgets: f[d][b] = min over c of D[d][c] + f[d-1][b - w[d][c]], with w the
   cost above the dimension's cheapest choice in bins of (dense - cheapest) / bins. Building it
   costs O(dims * choices * bins) (about 5 ms for 20 layers x 14 choices x 2000 bins); one
   budget's allocation is then an O(dims) backtrack. The distinct allocations over all bin
   budgets are the DP's whole front; the evaluation budget is spread evenly over it (after the
   allocations for `dp.targets`, each fitted to the true cost), so one job gives a front.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from prunesearch.errors import ConfigError
from prunesearch.options import Options
from prunesearch.spaces import Arch, Space
from prunesearch.strategies.base import SearchContext, Strategy
from prunesearch.strategies.registry import register_strategy

log = logging.getLogger("prunesearch")
TABLE = "dp_distortion"  # the distortion table (state reused on resume, and a result)


class DpOptions(Options):
    """Options of the `dp` strategy (layer-adaptive allocation)."""

    cost: Literal["macs", "params"] | None = Field(
        None, description="the knapsack's cost (default: the run's search.objective, which may "
                          "be the predicted latency)")
    bins: int = Field(2000, ge=10, description="budget bins of the dynamic program")
    additivity_samples: int = Field(30, ge=0, description="random archs checking additivity")
    targets: list[float] = Field(default_factory=list, description="cost ratios whose exact "
                                 "allocation is evaluated first (the rest spreads on the front)")


@dataclass(frozen=True)
class Allocation:
    """The DP table over all bin budgets: `best[b]` is the least total distortion within b
    bins, `choice[d, b]` the choice of dimension d on that optimum's path."""

    best: np.ndarray
    choice: np.ndarray
    weights: tuple[np.ndarray, ...]

    def genes(self, bins: int) -> list[int] | None:
        """The optimal choice per dimension within `bins` (None if even the cheapest exceeds)."""
        b = min(bins, len(self.best) - 1)
        if b < 0 or not np.isfinite(self.best[b]):
            return None
        genes = [0] * len(self.weights)
        for d in range(len(self.weights) - 1, -1, -1):
            c = int(self.choice[d, b])
            genes[d] = c
            b -= int(self.weights[d][c])
        return genes


def allocate(distortion: Sequence[Sequence[float]], weights: Sequence[Sequence[int]],
             max_bins: int) -> Allocation:
    """Solve min sum_d distortion[d][c_d] s.t. sum_d weights[d][c_d] <= b for every b in
    0..max_bins at once (multiple-choice knapsack). Ties keep the later (larger) choice."""
    w = tuple(np.asarray(x, dtype=np.int64) for x in weights)
    prev = np.zeros(max_bins + 1)
    choice = np.zeros((len(w), max_bins + 1), dtype=np.int32)
    for d, (dist, wd) in enumerate(zip(distortion, w, strict=True)):
        cur = np.full(max_bins + 1, np.inf)
        for c, (dc, wc) in enumerate(zip(dist, wd, strict=True)):
            if wc > max_bins:
                continue
            cand = np.full(max_bins + 1, np.inf)
            cand[wc:] = prev[: max_bins + 1 - wc] + dc
            better = cand <= cur
            cur = np.where(better, cand, cur)
            choice[d, better] = c
        prev = cur
    return Allocation(prev, choice, w)


def _single_change(space: Space, d: int, gene: int) -> Arch:
    genes = [len(dim.choices) - 1 for dim in space.dims]
    genes[d] = gene
    return space.decode(genes)


def _correlations(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    p, m = np.asarray(predicted), np.asarray(measured)
    if len(p) < 3 or p.std() == 0 or m.std() == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return {"pearson": float(np.corrcoef(p, m)[0, 1]),
            "spearman": float(np.corrcoef(rank(p), rank(m))[0, 1])}


@register_strategy("dp", options=DpOptions)
class DpStrategy(Strategy):
    options: DpOptions

    def _distortion(self, ctx: SearchContext, arch: Arch, reference: np.ndarray) -> float:
        logits = ctx.evaluator.calibration_logits(arch).double().cpu().numpy()
        return float(np.mean((logits - reference) ** 2))

    def _measure(self, ctx: SearchContext) -> dict:
        """The distortion table and the additivity check (or the saved ones on resume)."""
        space = ctx.space
        names = [d.name for d in space.dims]
        saved = ctx.load_state(TABLE)
        if saved is not None and saved.get("dims") == names and saved.get("cost") == \
                self._cost_name:
            log.info("dp: distortion table reused from %s.json", TABLE)
            return saved
        reference = ctx.evaluator.calibration_logits(space.largest()).double().cpu().numpy()
        start = time.perf_counter()
        table = []
        total = sum(len(d.choices) - 1 for d in space.dims)
        done = 0
        for d, dim in enumerate(space.dims):
            row = []
            for g in range(len(dim.choices)):
                if g == len(dim.choices) - 1:
                    row.append(0.0)
                    continue
                row.append(self._distortion(ctx, _single_change(space, d, g), reference))
                done += 1
            table.append(row)
            log.info("dp: distortion of %s measured (%d/%d single changes)", dim.name, done,
                     total)
        table_s = time.perf_counter() - start
        rng = np.random.default_rng(ctx.seed)
        predicted, measured = [], []
        for _ in range(self.options.additivity_samples):
            genes = [int(rng.integers(len(dim.choices))) for dim in space.dims]
            predicted.append(sum(table[d][g] for d, g in enumerate(genes)))
            measured.append(self._distortion(ctx, space.decode(genes), reference))
        result = {"dims": names, "choices": [list(d.choices) for d in space.dims],
                  "cost": self._cost_name, "distortion": table,
                  "measure": "mean squared difference of logits on the calibration images",
                  "table_seconds": table_s, "single_changes": total,
                  "additivity": {"samples": len(predicted), "sum_of_singles": predicted,
                                 "measured": measured, **_correlations(predicted, measured)}}
        ctx.save_state(TABLE, result)
        add = result["additivity"]
        log.info("dp: table of %d single changes in %.1f s; additivity on %d random archs: "
                 "pearson %.3f, spearman %.3f", total, table_s, add["samples"], add["pearson"],
                 add["spearman"])
        return result

    def search(self, ctx: SearchContext) -> None:
        if not hasattr(ctx.evaluator, "calibration_logits"):
            raise ConfigError("search.strategy = 'dp' measures output distortion and needs an "
                              "evaluator with calibration logits (the weight-sharing one).")
        space = ctx.space
        self._cost_name = self.options.cost or ctx.axis.name
        self._price = (ctx.axis.arch_cost if self._cost_name == ctx.axis.name
                       else space.macs if self._cost_name == "macs" else space.params)
        table = self._measure(ctx)
        dense = self._price(space.largest())
        savings = [[dense - self._price(_single_change(space, d, g))
                    for g in range(len(dim.choices))] for d, dim in enumerate(space.dims)]
        # cost above each dimension's cheapest choice; the additive estimate of the cheapest
        # allocation is what is left when every dimension saves its most
        above = [[max(0, max(s) - x) for x in s] for s in savings]
        floor = dense - sum(max(s) for s in savings)
        span = max(1, dense - floor)
        unit = span / self.options.bins
        weights = [[math.ceil(a / unit - 1e-9) for a in row] for row in above]
        t = time.perf_counter()
        solution = allocate(table["distortion"], weights, self.options.bins)
        solve_s = time.perf_counter() - t
        t = time.perf_counter()
        o = self.options
        fitted = [self._fit(space, solution, t * dense, floor, unit) for t in o.targets]
        front = self._distinct(space, solution)
        per_budget_s = (time.perf_counter() - t) / (o.bins + 1 + len(o.targets))
        log.info("dp: table over %d budget bins solved in %.1f ms; %.0f us per budget "
                 "(backtrack and decode); %d distinct allocations", o.bins,
                 1e3 * solve_s, 1e6 * per_budget_s, len(front))
        ctx.save_state(TABLE, {**table, "solve_seconds": solve_s,
                               "seconds_per_budget": per_budget_s,
                               "distinct_allocations": len(front)})
        rest = [a for a in front if a not in fitted]
        k = min(len(rest), max(0, ctx.remaining() - len(fitted)))
        spread = [rest[round(i * (len(rest) - 1) / max(1, k - 1))] for i in range(k)]
        ctx.evaluate(list(dict.fromkeys(a for a in fitted + spread if a is not None)))

    @staticmethod
    def _distinct(space: Space, solution: Allocation) -> list[Arch]:
        """Every distinct optimal allocation over all bin budgets, dense first."""
        archs: dict[Arch, None] = {}
        for b in range(len(solution.best) - 1, -1, -1):
            genes = solution.genes(b)
            if genes is None:
                break
            archs[space.decode(genes)] = None
        return list(archs)

    def _fit(self, space: Space, solution: Allocation, limit: float, floor: float,
             unit: float) -> Arch | None:
        """The DP's allocation for a cost limit, its bin budget lowered until the Space's true
        cost fits (exact for densities; width savings are not additive)."""
        bins = int(math.floor((limit - floor) / unit + 1e-9))
        while bins >= 0:
            genes = solution.genes(bins)
            if genes is None:
                return None
            arch = space.decode(genes)
            cost = self._price(arch)
            if cost <= limit:
                return arch
            bins -= max(1, int((cost - limit) / unit))
        return None
