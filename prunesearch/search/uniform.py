"""The `uniform` baseline: the same width ratio in every group, swept over the ratio grid; in
a space without width dimensions, the same density in every masked layer, over its grid."""

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
        space = ctx.space
        ratios = ctx.width_ratios
        if not any(d.kind == "width" for d in space.dims) and space.density_layers():
            ratios = space.dims[space.density_layers()[0][0]].choices
        archs = [space.uniform(r) for r in sorted(ratios, reverse=True)]
        self._queue = list(dict.fromkeys(archs))  # distinct, in ratio order

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked
