"""The `uniform` baseline: the same width ratio in every group, swept over the ratio grid."""

from __future__ import annotations

from prunesearch.search.base import AskTellStrategy, SearchContext
from prunesearch.search.registry import register_strategy
from prunesearch.spaces import Arch


@register_strategy("uniform")
class UniformStrategy(AskTellStrategy):
    def __init__(self, batch_size: int = 8, **_: object) -> None:
        self.batch_size = batch_size
        self._queue: list[Arch] = []

    def start(self, ctx: SearchContext) -> None:
        archs = [ctx.space.uniform(r) for r in sorted(ctx.width_ratios, reverse=True)]
        self._queue = list(dict.fromkeys(archs))  # distinct, in ratio order

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked
