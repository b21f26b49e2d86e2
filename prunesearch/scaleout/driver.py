"""The run's side of a shared study (scaleout/tables.py): it evaluates like any worker, and copies
every result the study's feed brings into the run (journal, evaluator cache, budget count) as it
lands, so `show`, `plot`, `export` and a resume read the run folder as always.

Strategies keep their code. random and tpe run natively: every process asks its own sampler
for new candidates (`run_sampled`), the uniform start queued first. Every other strategy's
`ctx.evaluate(archs)` queues the archs for any process to take (`evaluate`): emo's generation,
dp's probes, a final pick. A process with nothing to take waits for news (scaleout/waking.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from prunesearch.evaluators import Result
from prunesearch.scaleout.tables import HEARTBEAT_S, SharedStudy, Work, arch_key
from prunesearch.scaleout.worker import CandidateWorker
from prunesearch.spaces import Arch

if TYPE_CHECKING:
    from prunesearch.strategies.base import SearchContext


class SharedSearch:
    def __init__(self, shared: SharedStudy, mode: str, recorded: list[Result]) -> None:
        self.shared, self.mode = shared, mode
        self.seen = {arch_key(r.arch) for r in recorded}
        self.worker: CandidateWorker | None = None

    def attach(self, ctx: SearchContext, sampler: optuna.samplers.BaseSampler | None) -> None:
        """Work on the study (sampling with `sampler` in sample mode) and catch up with
        results that landed while the run was away."""
        self.worker = CandidateWorker(self.shared, ctx.evaluator.space, ctx.evaluator, ctx.axis,
                                      self.mode, sampler, ctx.latency_gate)
        self.shared.waker.listen()
        self.sync(ctx)

    def sync(self, ctx: SearchContext) -> None:
        assert self.worker is not None, "attach() first"
        for result in self.worker.drain():
            key = arch_key(result.arch)
            if key not in self.seen:
                self.seen.add(key)
                ctx.evaluator.seed_cache([result])
                ctx.submit(result)

    def _work_or_wait(self, ctx: SearchContext) -> None:
        assert self.worker is not None, "attach() first"
        if self.worker.step():
            self.shared.waker.worked()
        else:
            self.shared.waker.wait(HEARTBEAT_S)  # news, or time to look for the dead's work
        self.sync(ctx)

    def _queue(self, ctx: SearchContext, archs: list[Arch]) -> None:
        space = ctx.evaluator.space
        self.shared.enqueue([Work(arch_key(a), [int(g) for g in space.encode(a)])
                             for a in archs])

    def run_sampled(self, ctx: SearchContext, sampler: optuna.samplers.BaseSampler,
                    first: list[Arch]) -> None:
        """random/tpe: `first` queued (as many as the budget has room for), then take and
        sample candidates until every budget slot is claimed and every claimed arch's result
        is in the run (after the time limit, or once the sampler finds nothing new: no new
        claims)."""
        self.attach(ctx, sampler)
        assert self.worker is not None
        self._queue(ctx, [a for a in first if ctx.known(a) is None][:ctx.remaining()])
        while True:
            if ctx.out_of_time() or self.worker.exhausted:
                self.shared.close_budget()
            used, budget = self.worker.slots or self.shared.slots()
            if used >= budget and len(self.seen) >= used:
                return
            self._work_or_wait(ctx)

    def evaluate(self, ctx: SearchContext, archs: list[Arch]) -> list[Result]:
        """ctx.evaluate for every other strategy: the archs not known yet, as many as the
        budget has room for, are queued and taken by any process; the answers in order, up
        to the first arch there was no room for."""
        if self.worker is None:
            self.attach(ctx, None)
        room = 0 if ctx.out_of_time() else ctx.remaining()
        asked: list[Arch] = []
        todo: dict[Arch, None] = {}
        for arch in archs:
            if ctx.known(arch) is None and arch not in todo:
                if room == 0:
                    break
                room -= 1
                todo[arch] = None
            asked.append(arch)
        self._queue(ctx, list(todo))  # a resumed run's rows are there already: kept as they are
        # until each is in the run, not just in the evaluator's cache: this process's own
        # last batch is cached while it is still being recorded, and counting only what is
        # in the run keeps the next call's room within the budget
        while any(arch_key(arch) not in self.seen for arch in todo):
            self._work_or_wait(ctx)
        return [ctx.known(arch) for arch in asked]  # type: ignore[misc]
