"""The non-dominated set (max score, min cost: MACs, params or latency) and its hypervolume.

Scores are prunesearch.metrics scores (accuracy, or 1 / perplexity): in [0, 1], higher is better."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymoo.indicators.hv import HV

HV_REFERENCE = (1.0, 1.0)


def hv_objectives(cost_label: str) -> str:
    """How summary.json names the hypervolume's objectives."""
    return f"(1 - score, {cost_label} / the dense model's), both minimized"


def pareto_indices(acc: Sequence[float], cost: Sequence[float]) -> list[int]:
    """Indices of points no other point beats on both accuracy (higher) and cost (lower),
    ordered by cost. Of exact duplicates only the first is kept."""
    order = sorted(range(len(acc)), key=lambda i: (cost[i], -acc[i], i))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return front


def hypervolume(acc: Sequence[float], cost: Sequence[float], dense_cost: float) -> float:
    """Area dominated by the points in (1 - acc, cost / dense_cost), reference point (1, 1).
    Points beyond the reference (e.g. more MACs than dense) add nothing."""
    if not acc:
        return 0.0
    points = np.column_stack([1.0 - np.asarray(acc, float), np.asarray(cost, float) / dense_cost])
    inside = points[(points < np.asarray(HV_REFERENCE)).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(HV_REFERENCE))(inside))


def hypervolume_history(acc: Sequence[float | None], cost: Sequence[float],
                        dense_cost: float) -> list[float]:
    """Hypervolume of the first i candidates, for i = 1..n (failed ones have acc None)."""
    history, front_acc, front_cost = [], [], []
    for a, c in zip(acc, cost, strict=True):
        if a is not None:
            front_acc.append(a)
            front_cost.append(c)
            keep = pareto_indices(front_acc, front_cost)
            front_acc = [front_acc[i] for i in keep]
            front_cost = [front_cost[i] for i in keep]
        history.append(hypervolume(front_acc, front_cost, dense_cost))
    return history
