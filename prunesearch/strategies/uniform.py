"""The `uniform` baseline: uniform scaling of the network, the same choice in every group. Where
the space has depth dimensions, the compound grid (every width ratio x every count of blocks
kept per stage, the same in every stage: EfficientNet's compound scaling) by default, or the
width sweep at full depth (`depths = "full"`); in a space without width dimensions, the same
density in every masked layer, over its grid."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prunesearch.options import Options
from prunesearch.spaces import Arch
from prunesearch.strategies.base import AskTellStrategy, SearchContext
from prunesearch.strategies.registry import register_strategy


class UniformOptions(Options):
    depths: Literal["all", "full"] = Field(
        "all", description="all: every width ratio with every count of blocks kept per stage "
        "(the compound grid); full: the width ratios at full depth only")


@register_strategy("uniform", options=UniformOptions)
class UniformStrategy(AskTellStrategy):
    options: UniformOptions

    def __init__(self, options: UniformOptions) -> None:
        super().__init__(options)
        self._queue: list[Arch] = []

    def start(self, ctx: SearchContext) -> None:
        full = self.options.depths == "full"
        self._queue = ctx.space.uniform_sweep() if full else ctx.space.compound_grid()

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        asked, self._queue = self._queue[:n], self._queue[n:]
        return asked
