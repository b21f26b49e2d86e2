"""The Pareto front as it travels: from the search to fine-tuning, export and the Python API, in
memory. `pareto.json` rows are the same points written down (`row` / `from_row`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from prunesearch.errors import UserError
from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis
from prunesearch.pareto import pareto_indices
from prunesearch.spaces import Arch


class Recorded(Protocol):
    """A recorded candidate: its id in the run, the strategy that proposed it, its result."""

    id: int
    strategy: str
    result: Result


@dataclass(frozen=True)
class FrontPoint:
    """One candidate of the front: its arch, costs (MACs, params, predicted latency when the run
    has a table; `cost_ratio` on the axis the run searched) and scores (`val_score`: the
    search's proxy on validation; `test_score`: after fine-tuning, None before)."""

    id: int
    strategy: str
    arch: Arch
    macs: int
    params: int
    macs_ratio: float
    latency_us: float | None
    cost_ratio: float
    val_score: float
    test_score: float | None = None

    @classmethod
    def of(cls, item: Recorded, axis: CostAxis, dense_macs: int,
           test_score: float | None = None) -> FrontPoint:
        r = item.result
        return cls(item.id, item.strategy, r.arch, r.macs, r.params,
                   round(r.macs / dense_macs, 6), r.latency_us, round(axis.ratio(r), 6),
                   r.val_score, test_score)

    def with_test_score(self, score: float | None) -> FrontPoint:
        return replace(self, test_score=score)

    def row(self) -> dict[str, Any]:
        """The point as a row of pareto.json (the arch as a plain dict)."""
        return {**asdict(self), "arch": self.arch.to_dict()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FrontPoint:
        fields = {k: row.get(k) for k in cls.__dataclass_fields__ if k != "arch"}
        return cls(**{**fields, "arch": Arch.from_dict(row["arch"])})


def front_of(candidates: Iterable[Recorded], axis: CostAxis, dense_macs: int,
             test_scores: Mapping[int, float] | None = None) -> list[FrontPoint]:
    """The non-dominated successful candidates (score up, cost on `axis` down), in cost order,
    with their fine-tuned test scores where `test_scores` (by id) has one."""
    ok = [c for c in candidates if c.result.ok]
    picked = pareto_indices([c.result.val_score for c in ok], [axis.of(c.result) for c in ok])
    tests = test_scores or {}
    return [FrontPoint.of(ok[i], axis, dense_macs, tests.get(ok[i].id)) for i in picked]


def points_by_id(candidates: Iterable[Recorded], ids: list[int], axis: CostAxis,
                 dense_macs: int, where: str) -> list[FrontPoint]:
    """The successful candidates `ids` names (on the front or not), as points; a missing or
    failed one is a UserError naming `where` they were looked for."""
    found = {c.id: c for c in candidates if c.result.ok and c.id in ids}
    missing = sorted(set(ids) - set(found))
    if missing:
        raise UserError(f"finetune.ids names candidates {missing} that {where} does not have "
                        f"(or that failed); see its candidates.csv.")
    return [FrontPoint.of(c, axis, dense_macs) for c in found.values()]
