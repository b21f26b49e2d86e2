"""`emo`: evolutionary multi-objective search with pymoo over the integer genes of any Space.

Genes are searched as reals in [-0.5, k - 0.5) and rounded, so every one of a dimension's k
choices owns an interval of the same width: SBX and polynomial mutation then carry no rounding
bias toward or away from the ends. Duplicates are eliminated by the rounded genes (= by Arch).
One generation is asked at a time, evaluated through the shared evaluator in a batch, told
back, and the algorithm's whole state is pickled into the run directory: `--resume` continues
from the last finished generation and, because the evaluator's cache holds every journaled
candidate, replays nothing and loses nothing.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import cloudpickle  # pymoo's algorithms hold local functions that pickle refuses
import numpy as np
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

from prunesearch.config import EmoConfig
from prunesearch.errors import ConfigError
from prunesearch.evaluators import Result
from prunesearch.runs.files import write_atomic
from prunesearch.runs.pareto import hypervolume, pareto_indices
from prunesearch.search.base import AskTellStrategy, SearchContext
from prunesearch.search.registry import register_strategy
from prunesearch.spaces import Arch

log = logging.getLogger("prunesearch")
STATE_FILE = "emo_state.pkl"


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


@register_strategy("emo")
class EMOStrategy(AskTellStrategy):
    """Objectives: 1 - val_acc, MACs ratio (and params ratio if asked); the MACs-ratio range
    is a pair of pymoo inequality constraints. A failed candidate gets the worst objectives."""

    def __init__(self, batch_size: int = 8, seed_uniform: bool = True,
                 emo: EmoConfig | None = None, initial: list[Arch] | None = None,
                 **_: object) -> None:
        self.options = emo or EmoConfig()
        self.initial = initial or []
        if self.options.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown search.emo.algorithm '{self.options.algorithm}'; "
                              f"available: {', '.join(ALGORITHMS)}.")
        if self.options.algorithm == "moead" and (self.options.macs_min > 0
                                                  or self.options.macs_max < 1):
            raise ConfigError("search.emo.algorithm = 'moead' does not handle constraints; "
                              "drop search.emo.macs_min/macs_max or choose nsga2.")
        self.seed_uniform = seed_uniform
        self._asked: Population | None = None

    def _state_path(self, ctx: SearchContext) -> Path:
        return ctx.run_dir / STATE_FILE

    def start(self, ctx: SearchContext) -> None:
        path = self._state_path(ctx)
        if path.exists():
            self.algorithm = pickle.loads(path.read_bytes())
            log.info("emo: resumed after generation %d", self.algorithm.n_iter - 1)
            return
        bounds = np.asarray(ctx.space.bounds(), dtype=float)
        o = self.options
        constrained = o.macs_min > 0 or o.macs_max < 1
        problem = Problem(n_var=len(bounds), n_obj=3 if o.third_objective else 2,
                          n_ieq_constr=2 if constrained else 0,
                          xl=np.full(len(bounds), -0.5), xu=bounds - 0.5 - 1e-6)
        self.algorithm = make_algorithm(o.algorithm, o.pop_size, self._initial(ctx, bounds))
        self.algorithm.setup(problem, termination=NoTermination(), seed=ctx.seed, verbose=False)

    def _initial(self, ctx: SearchContext, bounds: np.ndarray) -> np.ndarray:
        """Given archs, the uniform-width sweep (if asked) and random genes, all distinct."""
        rng = np.random.default_rng(ctx.seed)
        rows: dict[Arch, np.ndarray] = {
            arch: np.asarray(ctx.space.encode(arch), dtype=float) for arch in self.initial}
        if self.seed_uniform:
            for ratio in sorted(ctx.width_ratios, reverse=True):
                arch = ctx.space.uniform(ratio)
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
        if max_gen is not None and self.algorithm.n_iter > max_gen:
            return []
        if self._asked is None:
            self._asked = self.algorithm.ask()
        return [self._decode(ctx, x) for x in self._asked.get("X")]

    def tell(self, ctx: SearchContext, archs: list[Arch], results: list[Result]) -> None:
        if len(results) < len(archs):
            return  # the budget ended mid-generation: that generation is not told
        pop, self._asked = self._asked, None
        o = self.options
        dense = ctx.space.dense_macs
        F, G = [], []
        for r in results:
            ratio = r.macs / dense
            objectives = [1.0 - r.val_acc, ratio] if r.ok else [1.0, 1.0]
            if o.third_objective == "params":
                objectives.append(r.params / ctx.space.dense_params)
            F.append(objectives)
            G.append([o.macs_min - ratio, ratio - o.macs_max])
        kwargs = {"F": np.asarray(F)}
        if self.algorithm.problem.n_ieq_constr:
            kwargs["G"] = np.asarray(G)
        PymooEvaluator().eval(StaticProblem(self.algorithm.problem, **kwargs), pop)
        self.algorithm.tell(infills=pop)
        write_atomic(self._state_path(ctx), cloudpickle.dumps(self.algorithm))
        self._log_generation(ctx)

    def _log_generation(self, ctx: SearchContext) -> None:
        done = [r for r in ctx.evaluator.results() if r.ok]
        acc = [r.val_acc for r in done]
        macs = [r.macs for r in done]
        front = pareto_indices(acc, macs)
        hv = hypervolume([acc[i] for i in front], [macs[i] for i in front], ctx.space.dense_macs)
        best = {t: max((a for a, m in zip(acc, macs, strict=True)
                        if m <= t * ctx.space.dense_macs), default=0.0) for t in (0.25, 0.5, 0.75)}
        log.info("emo gen %d: %d evaluations, hypervolume %.4f, best proxy acc at 25/50/75%% "
                 "MACs: %.4f / %.4f / %.4f", self.algorithm.n_iter - 1, ctx.n_evals, hv,
                 best[0.25], best[0.5], best[0.75])
