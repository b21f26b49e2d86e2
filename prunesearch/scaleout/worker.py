"""The worker's loop: take a trial of a shared study, claim its arch, evaluate it, write its
result, tell the study; what `prunesearch worker` runs, and the driver's own share of the
work."""

from __future__ import annotations

import warnings
from contextlib import suppress

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from prunesearch.evaluators import Evaluator
from prunesearch.latency.gate import LatencyGate
from prunesearch.objective import CostAxis
from prunesearch.scaleout.tables import (
    RESULT,
    SharedStudy,
    arch_key,
    result_from_attr,
    result_to_attr,
    worker_id,
)
from prunesearch.spaces import Space
from prunesearch.strategies.trials import trial_attrs, trial_values


class CandidateWorker:
    """Evaluates a shared study's trials one at a time: the loop of `prunesearch worker`, and
    the driver's own share of the work."""

    def __init__(self, shared: SharedStudy, study: optuna.Study, space: Space,
                 evaluator: Evaluator, axis: CostAxis, mode: str,
                 latency_gate: LatencyGate | None = None) -> None:
        self.shared, self.study, self.space = shared, study, space
        self.evaluator, self.axis, self.mode = evaluator, axis, mode
        self.latency_gate = latency_gate
        self.evaluated = 0

    def step(self) -> bool:
        """Take and finish one trial; False when there was none to take."""
        fail_stale_trials(self.study)
        trial_id = self.shared.pop_waiting(self.study)
        if trial_id is not None:
            trial = Trial(self.study, trial_id)
        elif self.mode == "sample" and _has_room(self.shared):
            with warnings.catch_warnings():  # we beat ourselves (beating), around ask and tell
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = self.study.ask()
        else:
            return False
        # judged stale meanwhile (a stalled heartbeat): its retry settles the arch
        with self.shared.beating(trial._trial_id), suppress(UpdateFinishedTrialError):
            self._finish(trial)
        return True

    def _finish(self, trial: Trial) -> None:
        genes = [trial.suggest_int(d.name, 0, len(d.choices) - 1) for d in self.space.dims]
        arch = self.space.decode(genes)
        key = arch_key(arch)
        trial.set_user_attr("worker", worker_id())
        if self.latency_gate is not None and (reason := self.latency_gate.over(arch)):
            trial.set_user_attr("skipped", reason)  # as in one process: never evaluated
            return self._tell(trial, TrialState.FAIL, None)
        while True:
            claim = self.shared.claim(key, trial._trial_id)
            if claim.kind == "spent":
                trial.set_user_attr("skipped", "the run's budget is spent")
                return self._tell(trial, TrialState.FAIL, None)
            if claim.kind == "new":
                break
            if claim.owner == trial._trial_id:
                return  # another process popped this trial too (SQLite has no row locks): theirs
            owner = self.shared.storage.get_trial(claim.owner)
            if _dead(owner) and self.shared.take_over(key, claim.owner, trial._trial_id):
                break
            if not _dead(owner):
                return self._duplicate(trial, owner)
            # the claim moved on meanwhile: ask again who holds it
        result = self.evaluator.with_latency(self.evaluator.evaluate([arch])[0])
        self.evaluated += 1
        for name, value in trial_attrs(result).items():
            trial.set_user_attr(name, value)
        trial.set_user_attr(RESULT, result_to_attr(result))  # from here on, the result stands
        if result.ok:
            self._tell(trial, TrialState.COMPLETE, trial_values(result, self.axis))
        else:
            self._tell(trial, TrialState.FAIL, None)

    def _duplicate(self, trial: Trial, owner: FrozenTrial) -> None:
        """A known arch: the owner's values when it has them (a sampler learns the same as from
        a cached result in one process), otherwise failed; never evaluated again. An owner
        killed after its result landed but before it was told (failed stale) has values too:
        its result's, so the retry completes with them and the study keeps one COMPLETE
        trial for every candidate the run records."""
        trial.set_user_attr("duplicate_of", owner.number)
        if owner.state == TrialState.COMPLETE:
            return self._tell(trial, TrialState.COMPLETE, owner.values)
        landed = owner.user_attrs.get(RESULT)
        if owner.state == TrialState.FAIL and landed is not None:
            result = result_from_attr(landed, f"trial {owner._trial_id}")
            if result.ok:
                for name, value in trial_attrs(result).items():
                    trial.set_user_attr(name, value)
                return self._tell(trial, TrialState.COMPLETE, trial_values(result, self.axis))
        return self._tell(trial, TrialState.FAIL, None)

    def _tell(self, trial: Trial, state: TrialState, values: list[float] | None) -> None:
        self.study.tell(trial, values, state=state, skip_if_finished=True)


def _dead(trial: FrozenTrial) -> bool:
    """A claim holder that died before it wrote its result (failed stale)."""
    return trial.state == TrialState.FAIL and RESULT not in trial.user_attrs


def _has_room(shared: SharedStudy) -> bool:
    used, budget = shared.slots()
    return used < budget
