"""Every run's candidates as an Optuna study, so `optuna-dashboard runs/<name>/optuna.journal`
shows any run of any strategy: the study named after the strategy in the run's journal file,
one trial per candidate, values (1 - val_score, cost ratio on the run's axis), both minimized,
with metric names, the genes as integer parameters and the costs and arch as user attributes.

random and tpe ask and tell their own study there (their trials get the same names and
attributes); every other strategy's candidates are added to it as finished trials by
`StudyRecorder`, which catches up on resume with what the journal holds and the study lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.distributions import IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis
from prunesearch.spaces import Space
from prunesearch.strategies.trials import DIRECTIONS, name_metrics, trial_attrs, trial_values

STUDY_FILE = "optuna.journal"
def run_storage(run_dir: Path) -> JournalStorage:
    """The run's Optuna storage: a journal file in its directory (crash-safe, lock-protected)."""
    return JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))


def open_run_study(run_dir: Path, name: str,
                   sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The run's study `name` in its journal file, created or reopened, with the two
    minimized objectives every study of a run has."""
    return optuna.create_study(study_name=name, storage=run_storage(run_dir),
                               directions=DIRECTIONS, load_if_exists=True, sampler=sampler)


class StudyRecorder:
    """Adds each recorded candidate to the study `name` as a finished trial."""

    def __init__(self, run_dir: Path, name: str, space: Space, axis: CostAxis,
                 recorded: Sequence[Result]) -> None:
        self.space, self.axis = space, axis
        # the genes as integer parameters, as random/tpe suggest them
        self.distributions = {d.name: IntDistribution(0, len(d.choices) - 1)
                              for d in space.dims}
        self.study = open_run_study(run_dir, name)
        name_metrics(self.study, axis)
        for result in recorded[len(self.study.trials):]:  # a kill between journal and study
            self.add(result)

    def add(self, result: Result) -> None:
        genes = self.space.encode(result.arch)
        values = trial_values(result, self.axis)
        self.study.add_trial(optuna.trial.create_trial(
            params={d.name: int(g) for d, g in zip(self.space.dims, genes, strict=True)},
            distributions=self.distributions, values=values,
            state=TrialState.COMPLETE if result.ok else TrialState.FAIL,
            user_attrs=trial_attrs(result)))
