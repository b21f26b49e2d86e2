"""The worker's loop: take queued candidates (or sample new ones and claim them), evaluate them,
record each as a trial of the shared study; what `prunesearch worker` runs, and the driver's
own share of the work.

In sample mode (random, tpe) each process asks its own sampler on an in-memory study that
learns every result the study's feed brings (its own and the other processes'), so asking
costs the storage nothing. `batch` candidates are held, evaluated and recorded at a time: the
storage's round trips are paid once per batch (a fast evaluator on a distant server), and a
background thread pays them while the process evaluates: it records the last batch and, in
sample mode, claims the next one (asked of the sampler before the evaluation starts, as a
parallel study asks while trials run), so a distant server costs no waiting."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import Trial, TrialState

from prunesearch.evaluators import Evaluator, Result
from prunesearch.latency.gate import LatencyGate
from prunesearch.objective import CostAxis
from prunesearch.scaleout.tables import (
    HEARTBEAT_S,
    RESULT,
    Finish,
    SharedStudy,
    Work,
    arch_key,
    result_to_attr,
    worker_id,
)
from prunesearch.scaleout.trial_rows import FinishedTrial
from prunesearch.spaces import Arch, Space
from prunesearch.strategies.base import MAX_STALE_ROUNDS
from prunesearch.strategies.trials import DIRECTIONS, trial_attrs, trial_values

_Claimed = tuple[list[str], tuple[int, int]]  # SharedStudy.claim's answer


@dataclass
class _Held:
    work: Work
    arch: Arch
    asked: Trial | None  # the in-memory trial it was sampled as


class CandidateWorker:
    """Evaluates a shared study's candidates, `batch` at a time: the loop of `prunesearch
    worker`, and the driver's own share of the work."""

    def __init__(self, shared: SharedStudy, space: Space, evaluator: Evaluator, axis: CostAxis,
                 mode: str, sampler: optuna.samplers.BaseSampler | None = None,
                 latency_gate: LatencyGate | None = None, batch: int = 1) -> None:
        self.shared, self.space, self.evaluator, self.axis = shared, space, evaluator, axis
        self.mode, self.latency_gate, self.batch = mode, latency_gate, batch
        self.memory = (optuna.create_study(directions=DIRECTIONS, sampler=sampler)
                       if mode == "sample" else None)
        self.distributions = {d.name: IntDistribution(0, len(d.choices) - 1) for d in space.dims}
        self.evaluated = 0
        self.slots: tuple[int, int] | None = None  # (used, budget) as the last claim left it
        self.landed: list[Result] = []  # results read from the feed, not yet drained
        self._seq = 0  # the feed's position
        self._told: set[str] = set()  # archs the in-memory study knows
        self._next_look = 0.0  # sample mode: when to look for queued or stale candidates again
        self._fed = False  # the feed was read since the last drain
        self.stale_rounds = 0  # sampling rounds in a row that found no new arch
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="prunesearch-record")
        self._recording: tuple[Future[list[Finish]], list[_Held], list[Result]] | None = None
        self._claiming: tuple[dict[str, _Held], Future[_Claimed]] | None = None  # next batch

    # --- the feed ---------------------------------------------------------------------------
    def absorb(self) -> None:
        """Read what other processes recorded since the last read (nothing to read when none
        notified); the sampler learns it."""
        self._fed = True
        if not self.shared.waker.news():
            return
        for seq, result in self.shared.feed(self._seq):
            self._seq = seq
            self.landed.append(result)
            self._learn(result)

    def drain(self) -> list[Result]:
        """Every result recorded since the last drain, this process's and the feed's (read
        unless a step just read it); one may come twice."""
        if not self._fed:
            self.absorb()
        landed, self.landed, self._fed = self.landed, [], False
        return landed

    def _learn(self, result: Result, asked: Trial | None = None) -> None:
        key = arch_key(result.arch)
        if self.memory is None or key in self._told:
            return
        self._told.add(key)
        values = trial_values(result, self.axis)
        state = TrialState.COMPLETE if values is not None else TrialState.FAIL
        if asked is not None:
            self.memory.tell(asked, values, state=state)
        else:
            self.memory.add_trial(optuna.trial.create_trial(
                params=self._params(result.arch), distributions=self.distributions,
                values=values, state=state))

    def _params(self, arch: Arch) -> dict[str, int]:
        genes = self.space.encode(arch)
        return {d.name: int(g) for d, g in zip(self.space.dims, genes, strict=True)}

    # --- taking and finishing work ----------------------------------------------------------
    def step(self) -> bool:
        """Take (or sample and claim) up to `batch` candidates, evaluate them and hand their
        recording to a background thread, which writes while the next batch is claimed and
        evaluated (the storage's round trips and the rows' building overlap the evaluation);
        False when there was nothing to take and nothing left to record."""
        if self.memory is not None:
            self.absorb()
        held = self._take()
        if not held and self.memory is not None:
            held = self._sample()
            if not held and self.has_room():  # it sampled only archs known already
                self.stale_rounds += 1
                return self.flush() or not self.exhausted
        if not held:
            return self.flush()
        self.stale_rounds = 0
        self._claim_next()
        started = datetime.now()
        with self.shared.beating():  # also for the batch still being recorded
            results = self.evaluator.evaluate([h.arch for h in held])
            self.flush()
        results = [self.evaluator.with_latency(r) for r in results]
        for h, result in zip(held, results, strict=True):  # the sampler learns at once
            self._learn(result, h.asked)
        done = [Finish(h.work.key, self._trial(h.work, r, started))
                for h, r in zip(held, results, strict=True)]
        self._recording = (self._writer.submit(self.shared.finish, done), held, results)
        return True

    def flush(self) -> bool:
        """Wait for the batch being recorded, if any (its errors are raised here), and learn
        from it; whether there was one."""
        if self._recording is None:
            return False
        future, held, results = self._recording
        self._recording = None
        recorded = {f.key for f in future.result()}  # the rest were taken over: their
        for h, result in zip(held, results, strict=True):  # new holders record them
            if h.work.key in recorded:
                self.evaluated += 1
                self.landed.append(result)
        return True

    def has_room(self) -> bool:
        """Budget slots were left at the last claim."""
        return self.slots is not None and self.slots[0] < self.slots[1]

    @property
    def exhausted(self) -> bool:
        """The sampler proposed only known archs, round after round: the space is spent."""
        return self.stale_rounds >= MAX_STALE_ROUNDS

    def _take(self) -> list[_Held]:
        """Queued candidates, or ones a dead process held. In sample mode nothing is queued
        but the run's first candidates and the dead's, so it looks every HEARTBEAT_S."""
        if self.memory is not None and time.monotonic() < self._next_look:
            return []
        taken = self.shared.take(self.batch)
        if not taken:
            self._next_look = time.monotonic() + HEARTBEAT_S
        return [_Held(w, self.space.decode(w.genes), None) for w in taken]

    def _sample(self) -> list[_Held]:
        """New candidates from this process's sampler, claimed: those claimed while the last
        batch was evaluated, or asked and claimed now."""
        if self._claiming is not None:
            asked, claimed = self._claiming
            self._claiming = None
            return self._settle(asked, claimed.result())
        if self.slots is not None and not self.has_room():  # final: budgets never grow
            return []
        asked = self._ask()
        return self._settle(asked, self.shared.claim([h.work for h in asked.values()]))

    def _claim_next(self) -> None:
        """Sample mode: ask for the next batch now and claim it in the background."""
        if self.memory is None or self._claiming is not None or not self.has_room():
            return
        asked = self._ask()
        self._claiming = (asked, self._writer.submit(self.shared.claim,
                                                     [h.work for h in asked.values()]))

    def _ask(self) -> dict[str, _Held]:
        """Up to `batch` new archs from this process's sampler, by key; an arch over the
        latency limit is told failed without an evaluation, as in one process."""
        assert self.memory is not None
        asked: dict[str, _Held] = {}
        for _ in range(self.batch):
            trial = self.memory.ask(self.distributions)
            params = trial.params  # (a copy each time it is read)
            genes = [params[d.name] for d in self.space.dims]
            arch = self.space.decode(genes)
            key = arch_key(arch)
            if key in asked or key in self._told:
                self.memory.tell(trial, state=TrialState.FAIL)  # known: nothing to learn
            elif self.latency_gate is not None and self.latency_gate.over(arch):
                self._told.add(key)
                self.memory.tell(trial, state=TrialState.FAIL)
            else:
                asked[key] = _Held(Work(key, genes), arch, trial)
        return asked

    def _settle(self, asked: dict[str, _Held], claimed: _Claimed) -> list[_Held]:
        """What a claim of `asked` got; the sampler is told the rest failed."""
        got, self.slots = claimed
        assert self.memory is not None
        for key in set(asked) - set(got):  # another process has it, or no budget is left
            self.memory.tell(asked[key].asked, state=TrialState.FAIL)  # type: ignore[arg-type]
        return [asked[key] for key in got]

    def _trial(self, work: Work, result: Result, started: datetime) -> FinishedTrial:
        genes = {d.name: (g, len(d.choices)) for d, g in zip(self.space.dims, work.genes,
                                                              strict=True)}
        attrs = {**trial_attrs(result), "worker": worker_id(), RESULT: result_to_attr(result)}
        return FinishedTrial(genes, trial_values(result, self.axis), attrs, started)
