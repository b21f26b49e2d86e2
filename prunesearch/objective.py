"""The cost a run trades accuracy against: MACs (the default), parameters, or the latency a
measured table predicts. Fronts, hypervolume, fine-tuning targets, export limits and search
objectives are all ratios of the dense model's cost on this one axis."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from prunesearch.spaces import Space

Objective = Literal["macs", "params", "latency"]
OBJECTIVES: tuple[str, ...] = ("macs", "params", "latency")
# Where each axis's value lives in a Result and in a front row.
_KEYS = {"macs": "macs", "params": "params", "latency": "latency_us"}
_LABELS = {"macs": "MACs", "params": "params", "latency": "predicted latency"}


@dataclass(frozen=True)
class CostAxis:
    """`name` and the dense model's cost on it; `arch_cost` prices an Arch that was not
    evaluated (dp's knapsack, emo-pms's combinations); `expected` (latency only) is the cost's
    differentiable expectation under per-dimension distributions over choices (tas). A run
    read back has neither."""

    name: str
    dense: float
    arch_cost: Callable[[Any], float] | None = None
    expected: Callable[[dict[int, Any]], Any] | None = None

    @property
    def key(self) -> str:
        """The field of a Result (and the key of a front row) holding this cost."""
        return _KEYS[self.name]

    @property
    def label(self) -> str:
        return _LABELS[self.name]

    def of(self, item: Any) -> float:
        """The cost of a Result or of a row (dict) on this axis."""
        value = item.get(self.key) if isinstance(item, Mapping) else getattr(item, self.key)
        if value is None:
            raise ValueError(f"no {self.label} recorded for this candidate")
        return float(value)

    def ratio(self, item: Any) -> float:
        return self.of(item) / self.dense

    def arch_ratio(self, arch: Any) -> float:
        if self.arch_cost is None:
            raise ValueError("this axis was read back from a run and cannot price new archs")
        return self.arch_cost(arch) / self.dense

    @classmethod
    def counted(cls, name: str, space: Space) -> CostAxis:
        """MACs or params, priced by the space's analytic cost model."""
        if name == "params":
            return cls("params", space.dense_params, space.params)
        return cls("macs", space.dense_macs, space.macs)

    @classmethod
    def read_back(cls, summary: Mapping[str, Any], name: str | None = None) -> CostAxis:
        """An axis of a finished run from its summary.json: the one it was searched on
        (`objective`; MACs for runs from before axes existed), or `name`. ValueError when the
        run recorded no cost on that axis (latency is only predicted when a run asks)."""
        name = name or summary.get("objective", "macs")
        if name not in _KEYS:
            raise ValueError(f"unknown cost axis '{name}' (one of {', '.join(OBJECTIVES)})")
        dense = summary["dense"].get(_KEYS[name])
        if dense is None:
            raise ValueError(f"the run recorded no {_LABELS[name]}")
        return cls(name, float(dense))
