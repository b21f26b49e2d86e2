"""search.max_latency in the table's terms, corrected by measuring networks near it.

A table's median error is a few percent over the whole space, but near one limit it can be
biased one way: an overhead-bound small network slows differently from a compute-bound large
one as the machine's phase moves (benchmarks/README.md), and the calibration's least squares
favours no region. A search that trusts a table over-predicting by 10% at the limit never
visits the networks that really run at the limit, and its pick leaves a tenth of the budget
unused (measured in the first latency_peers cell: predicted 0.40, measured 0.29-0.35). So the
run measures a few networks the table places near the limit, each in turns with the dense
model in one process, and moves the limit by their median measured / predicted ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunesearch.latency.measure import latency_ratio
from prunesearch.latency.table import LatencyModel
from prunesearch.spaces import Arch

NEAR_LIMIT = (0.8, 1.2)  # networks predicted within this band of the limit are measured
LIMIT_ARCHS = 8
MIN_ARCHS = 3  # fewer near the limit: keep the table's prediction
DRAWS = 4000
PAIRS = {1: 12}  # turns with the dense model per network, by batch size (otherwise 6)


@dataclass(frozen=True)
class LatencyLimit:
    """The user's `target` (a measured ratio to dense) and the predicted ratio the search
    holds candidates to: target / scale, scale the median measured / predicted ratio of the
    `measured` (predicted, measured) networks near it (1.0 when too few were found)."""

    target: float
    scale: float
    measured: tuple[tuple[float, float], ...]

    @property
    def predicted_ratio(self) -> float:
        return self.target / self.scale

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "predicted_ratio": self.predicted_ratio,
                "scale": self.scale,
                "measured": [{"predicted": p, "measured": m} for p, m in self.measured]}


def near_limit(table: LatencyModel, target: float, seed: int) -> list[Arch]:
    """Up to LIMIT_ARCHS distinct networks predicted within NEAR_LIMIT x `target`: the compound
    grid's first, then random draws, in a seeded order."""
    space = table.space
    lo, hi = NEAR_LIMIT[0] * target, NEAR_LIMIT[1] * target
    rng = np.random.default_rng(seed)
    found = [a for a in space.compound_grid() if lo <= table.ratio(a) <= hi][:LIMIT_ARCHS // 2]
    for _ in range(DRAWS):
        if len(found) >= LIMIT_ARCHS:
            break
        arch = space.sample(rng)
        if arch not in found and lo <= table.ratio(arch) <= hi:
            found.append(arch)
    return found


def ratio_meter(table: LatencyModel, model: nn.Module, batch: int, device: torch.device,
                runtime: str) -> Callable[[Arch], float]:
    """arch -> its measured latency ratio to `model` (the dense one), timed now in turns with
    it in `runtime` at `batch`."""
    slicer = table.space.slicer(model)
    shape = tuple(table.space.example.shape[1:])
    pairs = PAIRS.get(batch, 6)

    def measure(arch: Arch) -> float:
        return latency_ratio(slicer.build(arch).to(device), model, shape, batch, pairs=pairs,
                             runtime=runtime)[2]

    return measure


def measured_limit(table: LatencyModel, model: nn.Module, target: float, batch: int,
                   device: torch.device, runtime: str, seed: int) -> LatencyLimit:
    """The limit the search holds candidates to so that they MEASURE at most `target` of the
    dense model's latency, from networks near it timed now in `runtime` at `batch`."""
    archs = near_limit(table, target, seed)
    if len(archs) < MIN_ARCHS:
        return LatencyLimit(target, 1.0, ())
    measure = ratio_meter(table, model, batch, device, runtime)
    measured = tuple((table.ratio(a), measure(a)) for a in archs)
    scale = statistics.median(m / p for p, m in measured)
    return LatencyLimit(target, scale, measured)
