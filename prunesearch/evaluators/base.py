"""The evaluator interface strategies see: `evaluate(archs) -> list[Result]`.

The base class owns what every evaluator needs once (pymoo's template-method shape): the cache
by Arch, timing, analytic costs and failure handling; subclasses only score one built candidate.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from prunesearch.errors import UserError
from prunesearch.spaces import Arch, Space

log = logging.getLogger("prunesearch")


@dataclass(frozen=True)
class Result:
    """One evaluated candidate: `val_score` is its score on validation (prunesearch.metrics:
    higher is better). A failed one has `status="failed"`, `val_score` None and the error."""

    arch: Arch
    macs: int
    params: int
    val_score: float | None
    seconds: float
    status: Literal["ok", "failed"] = "ok"
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    latency_us: float | None = None  # predicted by the run's latency table, when it has one

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Evaluator(ABC):
    """Scores Archs of one Space. Results are cached by Arch: asking twice costs nothing.
    `val_x`/`val_y` are the validation examples scores are measured on (the training
    strategies measure their networks there too, so their val_score compares with proxies)."""

    val_x: torch.Tensor
    val_y: torch.Tensor

    def __init__(self, space: Space) -> None:
        self.space = space
        self._cache: dict[Arch, Result] = {}
        # Set by the application when the run has a latency table: every result records it.
        self.predict_latency: Callable[[Arch], float] | None = None

    def with_latency(self, result: Result) -> Result:
        """`result` with its predicted latency filled in (when the run predicts latency), in
        the precision candidates.csv keeps, so a resumed run sees the same numbers."""
        if self.predict_latency is None or result.latency_us is not None:
            return result
        return replace(result, latency_us=round(self.predict_latency(result.arch), 3))

    def build(self, arch: Arch) -> nn.Module:
        """The candidate as a real model, as it was scored (an export of a point that was not
        fine-tuned uses it)."""
        raise UserError(f"The {type(self).__name__} evaluator cannot build its candidates as "
                        f"models; fine-tune the point first, then export it.")

    def seed_cache(self, results: Iterable[Result]) -> None:
        """Make earlier results (a resumed run's journal) known, so they are never re-run."""
        for r in results:
            self._cache[r.arch] = r

    def cached(self, arch: Arch) -> Result | None:
        return self._cache.get(arch)

    def results(self) -> list[Result]:
        """Every result known so far (resumed ones included), in the order they arrived."""
        return list(self._cache.values())

    def evaluate(self, archs: Sequence[Arch]) -> list[Result]:
        return [self._evaluate_cached(a) for a in archs]

    def _evaluate_cached(self, arch: Arch) -> Result:
        hit = self._cache.get(arch)
        if hit is not None:
            return hit
        macs, params = self.space.macs(arch), self.space.params(arch)
        start = time.perf_counter()
        try:
            val_score = self._score(arch)
        except Exception as err:  # a failing candidate is recorded, the search goes on
            log.warning("candidate failed: %s: %s", type(err).__name__, err)
            result = Result(arch, macs, params, None, time.perf_counter() - start, "failed",
                            f"{type(err).__name__}: {err}")
        else:
            result = Result(arch, macs, params, val_score, time.perf_counter() - start)
        result = self.with_latency(result)
        self._cache[arch] = result
        return result

    @abstractmethod
    def _score(self, arch: Arch) -> float:
        """Validation score of `arch` in [0, 1] (prunesearch.metrics)."""
