"""The `uniform` baseline: the same width ratio in every group, swept over the ratio grid; in
a space without width dimensions, the same density in every masked layer, over its grid."""

from __future__ import annotations

from prunesearch.spaces import Arch
from prunesearch.strategies.base import AskTellStrategy, SearchContext
from prunesearch.strategies.registry import register_strategy


@register_strategy("uniform")
class UniformStrategy(AskTellStrategy):
    def __init__(self) -> None:
        super().__init__()
        self._queue: list[Arch] = []

    def start(self, ctx: SearchContext) -> None:
        self._queue = ctx.space.uniform_sweep()

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked
