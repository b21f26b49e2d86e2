"""`random` and `tpe`: optuna's multi-objective samplers over the integer genes.

The study is the run's own (the application opens it: a JournalStorage file in the run
folder, crash-safe and safe for several local processes), named after the strategy, its
trials named and annotated like every other run's (optuna-dashboard shows them). On resume,
trials asked but never told are evaluated (or found in the evaluator's cache) and told, so no
candidate is lost or repeated.
With `--storage`, every process of the shared study asks its own sampler, which learns every
result the study records (prunesearch/scaleout/driver.py).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod

import optuna
from optuna.trial import TrialState
from pydantic import Field

from prunesearch.evaluators import Result
from prunesearch.options import Options
from prunesearch.spaces import Arch
from prunesearch.strategies.base import AskTellStrategy, SearchContext
from prunesearch.strategies.registry import register_strategy
from prunesearch.strategies.trials import name_metrics, trial_attrs

optuna.logging.set_verbosity(optuna.logging.WARNING)
# multivariate TPE is marked experimental by optuna; it is the sampler we choose on purpose
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class SamplerOptions(Options):
    """Options of `random` and `tpe`."""

    seed_uniform: bool = Field(True, description="start with the uniform networks (the "
                               "width sweep; under latency the width x depth grid)")


class OptunaStrategy(AskTellStrategy):
    """`seed_uniform` enqueues the uniform networks (`SearchContext.uniform_start`) as the
    first trials of a new study: independent genes rarely produce wide networks (the MACs
    ratio is a product of widths), so without it the front's upper half stays empty."""

    options: SamplerOptions
    keeps_study = True

    def __init__(self, options: SamplerOptions) -> None:
        super().__init__(options)
        self._pending: list[optuna.trial.Trial] = []
        self._trials: dict[Arch, list[optuna.trial.Trial]] = {}

    @abstractmethod
    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The optuna sampler of this strategy, seeded."""

    def search(self, ctx: SearchContext) -> None:
        if ctx.shared is None:
            return super().search(ctx)
        first = ctx.uniform_start() if self.options.seed_uniform else []
        ctx.shared.run_sampled(ctx, self.make_sampler(ctx.seed), first)

    def start(self, ctx: SearchContext) -> None:
        self.study = ctx.open_study(self.name, self.make_sampler(ctx.seed))
        name_metrics(self.study, ctx.axis)
        if self.options.seed_uniform and not self.study.trials:
            for arch in ctx.uniform_start():
                genes = ctx.space.encode(arch)
                self.study.enqueue_trial({d.name: g for d, g in zip(ctx.space.dims, genes,
                                                                    strict=True)},
                                         skip_if_exists=True)
        self._pending = [optuna.trial.Trial(self.study, t._trial_id)
                         for t in self.study.get_trials(deepcopy=False,
                                                        states=(TrialState.RUNNING,))]

    def _arch_of(self, ctx: SearchContext, trial: optuna.trial.Trial) -> Arch:
        genes = [trial.suggest_int(dim.name, 0, len(dim.choices) - 1) for dim in ctx.space.dims]
        return ctx.space.decode(genes)

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        trials, self._pending = self._pending[:n], self._pending[n:]
        trials += [self.study.ask() for _ in range(n - len(trials))]
        archs = [self._arch_of(ctx, t) for t in trials]
        for arch, trial in zip(archs, trials, strict=True):
            self._trials.setdefault(arch, []).append(trial)
        return archs

    def tell(self, ctx: SearchContext, archs: list[Arch], results: list[Result]) -> None:
        for result in results:
            trial = self._trials[result.arch].pop(0)
            for key, value in trial_attrs(result).items():
                trial.set_user_attr(key, value)
            if result.ok:
                self.study.tell(trial, list(ctx.objectives(result)))
            else:
                self.study.tell(trial, state=TrialState.FAIL)


@register_strategy("random", options=SamplerOptions)
class RandomStrategy(OptunaStrategy):
    """Uniform random genes: the baseline every other strategy must beat."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


@register_strategy("tpe", options=SamplerOptions)
class TPEStrategy(OptunaStrategy):
    """Multi-objective TPE; `constant_liar` keeps a batch of asks from piling on one point."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
