"""Strategies: `name` + `search(ctx)`. Population and sampler strategies use ask/tell (optuna's
core loop), so evaluation can be batched, cached, resumed and later farmed out."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.progress import Progress
from torch import nn

from prunesearch.evaluators import Evaluator, Result
from prunesearch.spaces import Arch, Space

if TYPE_CHECKING:
    from prunesearch.search.trained import TrainingKit

# Rounds in a row that bring no new candidate before a strategy is judged exhausted: a small
# space, or a sampler that keeps proposing known archs, must end rather than spin forever.
MAX_STALE_ROUNDS = 50


@dataclass(frozen=True)
class Budget:
    """When a search stops: a number of evaluations and/or seconds of wall time (pymoo's
    termination, reduced to what pruning searches need)."""

    max_evals: int
    time_limit: float | None = None


@dataclass
class SearchContext:
    """What a strategy may use. `evaluate` records every new result through `record`.
    `model` is the dense model (strategies that read its weights); `training` what the
    strategies that train networks themselves need (imp, bip, random-masks)."""

    space: Space
    evaluator: Evaluator
    budget: Budget
    seed: int
    run_dir: Path
    record: Callable[[Result], None]
    n_evals: int = 0  # new evaluations so far, resumed ones included
    started: float = field(default_factory=time.monotonic)
    width_ratios: Sequence[float] = ()
    model: nn.Module | None = None
    training: TrainingKit | None = None
    progress: Progress | None = None  # the live progress display: strategies add tasks to it

    def remaining(self) -> int:
        return max(0, self.budget.max_evals - self.n_evals)

    def out_of_time(self) -> bool:
        limit = self.budget.time_limit
        return limit is not None and time.monotonic() - self.started >= limit

    def done(self) -> bool:
        return self.remaining() == 0 or self.out_of_time()

    def evaluate(self, archs: Sequence[Arch]) -> list[Result]:
        """Evaluate in order; a new (uncached) result is recorded and counted once."""
        results = []
        for arch in archs:
            known = self.evaluator.cached(arch) is not None
            if not known and self.done():
                break
            result = self.evaluator.evaluate([arch])[0]
            if not known:
                self.n_evals += 1
                self.record(result)
            results.append(result)
        return results

    def objectives(self, result: Result) -> tuple[float, float]:
        """(1 - val_acc, MACs ratio): both minimized, as in the run's hypervolume."""
        return 1.0 - (result.val_acc or 0.0), result.macs / self.space.dense_macs


class Strategy(ABC):
    name: ClassVar[str]
    trains: ClassVar[bool] = False  # trains its own networks (no fine-tuning stage after it)
    needs_training: ClassVar[bool] = False  # reads SearchContext.training (data, recipe)

    @abstractmethod
    def search(self, ctx: SearchContext) -> None:
        """Search until the budget is spent, evaluating through `ctx.evaluate`."""


class AskTellStrategy(Strategy):
    """`search` is a thin loop over `ask` and `tell`, like optuna's `optimize`."""

    batch_size: int = 8

    def start(self, ctx: SearchContext) -> None:  # noqa: B027 - optional hook
        """Set up state (and restore it on resume) before the first ask."""

    @abstractmethod
    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        """Up to `n` archs to evaluate next; an empty list ends the search."""

    def tell(self, ctx: SearchContext, archs: list[Arch], results: list[Result]) -> None:  # noqa: B027
        """Learn from the results of the last ask (same order; may be shorter at budget end)."""

    def search(self, ctx: SearchContext) -> None:
        self.start(ctx)
        stale = 0
        while not ctx.done() and stale < MAX_STALE_ROUNDS:
            archs = self.ask(ctx, min(self.batch_size, ctx.remaining()))
            if not archs:
                break
            before = ctx.n_evals
            results = ctx.evaluate(archs)
            self.tell(ctx, archs, results)
            stale = stale + 1 if ctx.n_evals == before else 0
