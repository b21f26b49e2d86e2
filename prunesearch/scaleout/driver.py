"""The run's side of a shared study (scaleout/tables.py): it evaluates like any worker, and copies
every claimed arch's result into the run (journal, evaluator cache, budget count) as it lands,
so `show`, `plot`, `export` and a resume read the run folder as always.

Strategies keep their code. random and tpe run natively: every process asks its own sampler
for new trials (`run_sampled`). Every other strategy's `ctx.evaluate(archs)` enqueues the archs
as trials that any process takes (`evaluate`): emo's generation, dp's probes, a final pick.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from prunesearch.evaluators import Result
from prunesearch.scaleout.tables import GRACE_S, SharedStudy, arch_key
from prunesearch.scaleout.worker import CandidateWorker
from prunesearch.spaces import Arch

if TYPE_CHECKING:
    from prunesearch.strategies.base import SearchContext

POLL_S = 0.2  # how often a process with nothing to take looks again


class SharedSearch:
    def __init__(self, shared: SharedStudy, mode: str, recorded: list[Result]) -> None:
        self.shared, self.mode = shared, mode
        self.seen = {arch_key(r.arch) for r in recorded}
        self.worker: CandidateWorker | None = None

    def study(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        """The run's study with `sampler` (random and tpe sample from it in this process)."""
        return self.shared.load(sampler)

    def attach(self, ctx: SearchContext, study: optuna.Study) -> None:
        """Work on `study` (the strategy's own, with its sampler, for random and tpe) and
        catch up with results that landed while the run was away."""
        self.worker = CandidateWorker(self.shared, study, ctx.evaluator.space, ctx.evaluator,
                                      ctx.axis, self.mode, ctx.latency_gate)
        self.sync(ctx)

    def sync(self, ctx: SearchContext) -> None:
        for result in self.shared.results(self.seen):
            self.seen.add(arch_key(result.arch))
            ctx.evaluator.seed_cache([result])
            ctx.submit(result)

    def _work_or_wait(self, ctx: SearchContext) -> None:
        assert self.worker is not None, "attach() first"
        if not self.worker.step():
            time.sleep(POLL_S)
        self.sync(ctx)

    def run_sampled(self, ctx: SearchContext, study: optuna.Study) -> None:
        """random/tpe: take and sample trials until every budget slot is claimed and every
        claimed arch's result is in the run (after the time limit: no new claims)."""
        self.attach(ctx, study)
        while True:
            if ctx.out_of_time():
                self.shared.close_budget()
            used, budget = self.shared.slots()
            if used >= budget and len(self.seen) >= used:
                return
            self._work_or_wait(ctx)

    def evaluate(self, ctx: SearchContext, archs: list[Arch]) -> list[Result]:
        """ctx.evaluate for every other strategy: the archs not known yet, as many as the
        budget has room for, are enqueued and taken by any process; the answers in order, up
        to the first arch there was no room for."""
        if self.worker is None:
            self.attach(ctx, self.shared.load())
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
        checked = 0.0
        while any(ctx.known(arch) is None for arch in todo):
            if time.monotonic() - checked > GRACE_S:
                self._enqueue_missing(ctx, list(todo))
                checked = time.monotonic()
            self._work_or_wait(ctx)
        return [ctx.known(arch) for arch in asked]  # type: ignore[misc]

    def _enqueue_missing(self, ctx: SearchContext, archs: list[Arch]) -> None:
        """Enqueue each arch that has no answer and no trial waiting or running for it: all
        of them at first (a resumed run's leftovers included), later any whose last trial
        died without a retry (its killer died too)."""
        assert self.worker is not None
        space, study = ctx.evaluator.space, self.worker.study
        live = set()
        for trial in study.get_trials(deepcopy=False,
                                      states=(TrialState.WAITING, TrialState.RUNNING)):
            params = trial.system_attrs.get("fixed_params", trial.params)
            if all(d.name in params for d in space.dims):  # (a sampled trial not yet asked)
                live.add(arch_key(space.decode([params[d.name] for d in space.dims])))
        for arch in archs:
            if ctx.known(arch) is None and arch_key(arch) not in live:
                genes = space.encode(arch)
                study.enqueue_trial({d.name: int(g) for d, g in
                                     zip(space.dims, genes, strict=True)})
