"""`emo`: evolutionary multi-objective search with pymoo over the integer genes of any Space.

Genes are searched as reals in [-0.5, k - 0.5) and rounded, so every one of a dimension's k
choices owns an interval of the same width: SBX and polynomial mutation then carry no rounding
bias toward or away from the ends. Duplicates are eliminated by the rounded genes (= by Arch).
One generation is asked at a time, evaluated through the shared evaluator in a batch and told
back; the number of finished generations is the saved state (`emo_state.json`). `--resume`
rebuilds the algorithm from its seed and replays those generations from the journal (every
candidate is in the evaluator's cache, so nothing is evaluated again): pymoo draws from its own
seeded generator, so the rebuilt algorithm equals the one that was interrupted, and no live
object is ever pickled.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field
from pymoo.core.algorithm import Algorithm
from pymoo.core.duplicate import ElementwiseDuplicateElimination
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions

from prunesearch.errors import ConfigError, UserError
from prunesearch.evaluators import Result
from prunesearch.options import Options
from prunesearch.pareto import hypervolume, pareto_indices
from prunesearch.spaces import Arch
from prunesearch.strategies.base import AskTellStrategy, SearchContext
from prunesearch.strategies.registry import register_strategy

log = logging.getLogger("prunesearch")
STATE = "emo_state"  # {"generations": finished generations}


class EmoOptions(Options):
    """Options of `emo` and `emo-pms` (pymoo)."""

    algorithm: str = "nsga2"
    pop_size: int = Field(40, ge=4)
    max_generations: int | None = Field(None, ge=1, description="a budget in generations")
    macs_min: float = Field(0.0, ge=0, le=1, description="constraint: MACs ratio >= this")
    macs_max: float = Field(1.0, gt=0, le=1, description="constraint: MACs ratio <= this")
    third_objective: Literal["params"] | None = None
    seed_uniform: bool = Field(True, description="the first population holds the uniform "
                               "networks (the width sweep; under latency the width x depth "
                               "grid)")


class _SameArch(ElementwiseDuplicateElimination):
    def is_equal(self, a, b) -> bool:
        return bool(np.array_equal(np.rint(a.X), np.rint(b.X)))


def _reference_directions(pop_size: int) -> np.ndarray:
    return get_reference_directions("das-dennis", 2, n_partitions=pop_size - 1)


def make_algorithm(name: str, pop_size: int, initial: np.ndarray) -> Algorithm:
    """A pymoo algorithm by name, with integer-aware operators and Arch duplicate removal."""
    common = {"sampling": initial, "crossover": SBX(prob=0.9, eta=15),
              "mutation": PM(eta=20), "eliminate_duplicates": _SameArch()}
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(pop_size=pop_size, **common)
    if name == "nsga3":
        from pymoo.algorithms.moo.nsga3 import NSGA3

        return NSGA3(ref_dirs=_reference_directions(pop_size), pop_size=pop_size, **common)
    if name == "smsemoa":
        from pymoo.algorithms.moo.sms import SMSEMOA

        return SMSEMOA(pop_size=pop_size, n_offsprings=pop_size, **common)
    if name == "agemoea2":
        try:
            from pymoo.algorithms.moo.age2 import AGEMOEA2
        except Exception:
            raise ConfigError("search.emo.algorithm = 'agemoea2' needs numba: pip install "
                              "numba, or choose another algorithm.") from None
        return AGEMOEA2(pop_size=pop_size, **common)
    if name == "moead":  # the batch variant: a whole generation per ask, like the others
        from pymoo.algorithms.moo.moead import ParallelMOEAD

        del common["eliminate_duplicates"]  # MOEA/D keeps one solution per weight vector
        return ParallelMOEAD(ref_dirs=_reference_directions(pop_size),
                             n_neighbors=min(15, pop_size), **common)
    raise ValueError(f"unknown pymoo algorithm '{name}'")


ALGORITHMS = ("nsga2", "nsga3", "smsemoa", "agemoea2", "moead")


@register_strategy("emo", options=EmoOptions)
class EMOStrategy(AskTellStrategy):
    """Objectives: 1 - val_score, MACs ratio (and params ratio if asked); the MACs-ratio range
    is a pair of pymoo inequality constraints. A failed candidate gets the worst objectives.
    `initial` archs join the first population (emo-pms seeds its refinement with them)."""

    options: EmoOptions

    def __init__(self, options: EmoOptions, initial: list[Arch] | None = None) -> None:
        super().__init__(options)
        self.initial = initial or []
        if options.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown search.emo.algorithm '{options.algorithm}'; "
                              f"available: {', '.join(ALGORITHMS)}.")
        if options.algorithm == "moead" and (options.macs_min > 0 or options.macs_max < 1):
            raise ConfigError("search.emo.algorithm = 'moead' does not handle constraints; "
                              "drop search.emo.macs_min/macs_max or choose nsga2.")
        self._asked: Population | None = None
        self._generations = 0

    def start(self, ctx: SearchContext) -> None:
        bounds = np.asarray(ctx.space.bounds(), dtype=float)
        o = self.options
        constrained = o.macs_min > 0 or o.macs_max < 1
        problem = Problem(n_var=len(bounds), n_obj=3 if o.third_objective else 2,
                          n_ieq_constr=2 if constrained else 0,
                          xl=np.full(len(bounds), -0.5), xu=bounds - 0.5 - 1e-6)
        self.algorithm = make_algorithm(o.algorithm, o.pop_size, self._initial(ctx, bounds))
        self.algorithm.setup(problem, termination=NoTermination(), seed=ctx.seed, verbose=False)
        saved = ctx.load_state(STATE)
        if saved is not None:
            self._replay(ctx, int(saved["generations"]))

    def _replay(self, ctx: SearchContext, generations: int) -> None:
        """Tell the rebuilt algorithm the `generations` it had finished, from the cache."""
        for g in range(generations):
            pop = self.algorithm.ask()
            results = [ctx.known(self._decode(ctx, x)) for x in pop.get("X")]
            if any(r is None for r in results):
                raise UserError(f"{ctx.state_dir / STATE}.json says {generations} generations "
                                f"finished, but candidates of generation {g + 1} are not in "
                                f"the run's candidates.csv: the run folder was edited. Delete "
                                f"the state file to restart emo, or start a new run.")
            self._tell_population(ctx, pop, results)
        log.info("emo: resumed after generation %d (replayed from the journal)", generations)

    def _initial(self, ctx: SearchContext, bounds: np.ndarray) -> np.ndarray:
        """Given archs, the uniform networks (if asked) and random genes, all distinct."""
        rng = np.random.default_rng(ctx.seed)
        rows: dict[Arch, np.ndarray] = {
            arch: np.asarray(ctx.space.encode(arch), dtype=float) for arch in self.initial}
        if self.options.seed_uniform:
            for arch in ctx.uniform_start():
                rows.setdefault(arch, np.asarray(ctx.space.encode(arch), dtype=float))
        for _ in range(100 * self.options.pop_size):
            if len(rows) >= self.options.pop_size:
                break
            genes = rng.integers(0, bounds.astype(int))
            rows.setdefault(ctx.space.decode(genes.tolist()), genes.astype(float))
        return np.stack(list(rows.values())[: self.options.pop_size])

    def _decode(self, ctx: SearchContext, x: np.ndarray) -> Arch:
        genes = np.clip(np.rint(x), 0, np.asarray(ctx.space.bounds()) - 1).astype(int)
        return ctx.space.decode(genes.tolist())

    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        max_gen = self.options.max_generations
        if max_gen is not None and self._generations >= max_gen:
            return []
        if self._asked is None:
            self._asked = self.algorithm.ask()
        return [self._decode(ctx, x) for x in self._asked.get("X")]

    def tell(self, ctx: SearchContext, archs: list[Arch], results: list[Result]) -> None:
        if len(results) < len(archs):
            return  # the budget ended mid-generation: that generation is not told
        pop, self._asked = self._asked, None
        self._tell_population(ctx, pop, results)
        ctx.save_state(STATE, {"generations": self._generations})
        self._log_generation(ctx)

    def _tell_population(self, ctx: SearchContext, pop: Population,
                         results: list[Result]) -> None:
        o = self.options
        F, G = [], []
        for r in results:
            objectives = list(ctx.objectives(r)) if r.ok else [1.0, 1.0]
            if o.third_objective == "params":
                objectives.append(r.params / ctx.space.dense_params)
            F.append(objectives)
            macs_ratio = r.macs / ctx.space.dense_macs
            G.append([o.macs_min - macs_ratio, macs_ratio - o.macs_max])
        kwargs = {"F": np.asarray(F)}
        if self.algorithm.problem.n_ieq_constr:
            kwargs["G"] = np.asarray(G)
        PymooEvaluator().eval(StaticProblem(self.algorithm.problem, **kwargs), pop)
        self.algorithm.tell(infills=pop)
        self._generations += 1

    def _log_generation(self, ctx: SearchContext) -> None:
        done = [r for r in ctx.evaluator.results() if r.ok]
        acc = [r.val_score for r in done]
        ratios = [ctx.axis.ratio(r) for r in done]
        front = pareto_indices(acc, ratios)
        hv = hypervolume([acc[i] for i in front], [ratios[i] for i in front], 1.0)
        best = {t: max((a for a, c in zip(acc, ratios, strict=True) if c <= t), default=0.0)
                for t in (0.25, 0.5, 0.75)}
        log.info("emo gen %d: %d evaluations, hypervolume %.4f, best proxy score at 25/50/75%% "
                 "of dense %s: %.4f / %.4f / %.4f", self._generations, ctx.n_evals, hv,
                 ctx.axis.label, best[0.25], best[0.5], best[0.75])
