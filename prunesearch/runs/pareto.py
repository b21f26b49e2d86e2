"""The non-dominated set (max accuracy, min MACs) and its hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymoo.indicators.hv import HV

HV_REFERENCE = (1.0, 1.0)
HV_OBJECTIVES = "(1 - accuracy, macs / dense_macs), both minimized"


def pareto_indices(acc: Sequence[float], macs: Sequence[float]) -> list[int]:
    """Indices of points no other point beats on both accuracy (higher) and MACs (lower),
    ordered by MACs. Of exact duplicates only the first is kept."""
    order = sorted(range(len(acc)), key=lambda i: (macs[i], -acc[i], i))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return front


def hypervolume(acc: Sequence[float], macs: Sequence[float], dense_macs: float) -> float:
    """Area dominated by the points in (1 - acc, macs / dense_macs), reference point (1, 1).
    Points beyond the reference (e.g. more MACs than dense) add nothing."""
    if not acc:
        return 0.0
    points = np.column_stack([1.0 - np.asarray(acc, float), np.asarray(macs, float) / dense_macs])
    inside = points[(points < np.asarray(HV_REFERENCE)).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(HV_REFERENCE))(inside))


def hypervolume_history(acc: Sequence[float | None], macs: Sequence[float],
                        dense_macs: float) -> list[float]:
    """Hypervolume of the first i candidates, for i = 1..n (failed ones have acc None)."""
    history, front_acc, front_macs = [], [], []
    for a, m in zip(acc, macs, strict=True):
        if a is not None:
            front_acc.append(a)
            front_macs.append(m)
            keep = pareto_indices(front_acc, front_macs)
            front_acc = [front_acc[i] for i in keep]
            front_macs = [front_macs[i] for i in keep]
        history.append(hypervolume(front_acc, front_macs, dense_macs))
    return history
