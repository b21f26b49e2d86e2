"""Strategies: `name` + `search(ctx)`. Population and sampler strategies use ask/tell (optuna's
core loop), so evaluation can be batched, cached, resumed and later farmed out."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import optuna
import torch
from rich.progress import Progress
from torch import nn

from prunesearch.data import DatasetSplits
from prunesearch.errors import ConfigError, UserError
from prunesearch.evaluators import Evaluator, Result
from prunesearch.fileio import load_error_reason, write_json, write_torch
from prunesearch.latency.gate import LatencyGate
from prunesearch.models.options import TrainConfig
from prunesearch.objective import OBJECTIVES, CostAxis
from prunesearch.options import Options
from prunesearch.spaces import Arch, Space
from prunesearch.strategies.trials import DIRECTIONS, minimized

# Rounds in a row that bring no new candidate before a strategy is judged exhausted: a small
# space, or a sampler that keeps proposing known archs, must end rather than spin forever.
MAX_STALE_ROUNDS = 50


@dataclass(frozen=True)
class Budget:
    """When a search stops: a number of evaluations and/or seconds of wall time (pymoo's
    termination, reduced to what pruning searches need)."""

    max_evals: int
    time_limit: float | None = None


@dataclass
class TrainingKit:
    """What a training strategy needs: data, the dense recipe, a seeded fresh model."""

    data: DatasetSplits
    recipe: TrainConfig
    device: torch.device
    fresh_model: Callable[[int], nn.Module]
    val_x: torch.Tensor  # the evaluator's validation subset: val_score comparable to proxies
    val_y: torch.Tensor


@dataclass
class _Archive:
    """Where results go, and how many new ones went there: shared by a context and its
    children, so a phase of a strategy counts against the same budget."""

    record: Callable[[Result], None]
    n_evals: int


_STATE_TYPES = (str, int, float, bool, type(None), torch.Tensor)


def _needs_torch(obj: Any, where: str) -> bool:
    """Whether `obj` must be saved with torch.save (it holds a tensor or an int dict key, as
    optimizer states do) rather than JSON. TypeError unless it is made of tensors, numbers,
    strings, lists and dicts with str or int keys only: what JSON and a weights-only
    torch.load read back without running code."""
    if isinstance(obj, dict):
        if not all(isinstance(k, str | int) for k in obj):
            raise TypeError(f"state {where}: dict keys must be strings or integers")
        int_keys = any(isinstance(k, int) for k in obj)
        return any([_needs_torch(v, f"{where}.{k}") for k, v in obj.items()]) or int_keys
    if isinstance(obj, list | tuple):
        return any([_needs_torch(v, f"{where}[{i}]") for i, v in enumerate(obj)])
    if not isinstance(obj, _STATE_TYPES):
        raise TypeError(f"state {where}: {type(obj).__name__} cannot be saved; use tensors, "
                        f"numbers, strings, lists and dicts (no live objects)")
    return isinstance(obj, torch.Tensor)


class SharedEvaluation(Protocol):
    """The run's shared study, as a context uses it (prunesearch/scaleout/driver.py)."""

    def evaluate(self, ctx: SearchContext, archs: list[Arch]) -> list[Result]: ...

    def run_sampled(self, ctx: SearchContext, sampler: optuna.samplers.BaseSampler,
                    first: list[Arch]) -> None: ...


class TrainedNetworks(Protocol):
    """Where the networks a training strategy trains to their final weights are kept (the
    run's finetune.csv, prunesearch/runs/finetuned.py)."""

    def count(self, variant: str) -> int: ...

    def save(self, model: nn.Module, point: dict[str, Any], variant: str, init: str,
             epochs: int, val_score: float, test_score: float, seconds: float) -> None: ...


@dataclass(frozen=True)
class Problem:
    """What is searched, as pymoo's Problem: the space, how an arch is scored (`evaluator`),
    the cost traded against accuracy (`axis`: MACs unless the run asks for params or latency)
    and the latency limit no evaluated arch may exceed (`latency_gate`; an arch over it is
    answered, unrecorded and uncounted, as failed). `model`: the dense weights, for
    strategies that read them; `training`: data and recipe, for strategies that train
    networks."""

    space: Space
    evaluator: Evaluator
    axis: CostAxis | None = None
    latency_gate: LatencyGate | None = None
    model: nn.Module | None = None
    training: TrainingKit | None = None

    def __post_init__(self) -> None:
        if self.axis is None:
            object.__setattr__(self, "axis", CostAxis.counted("macs", self.space))


StudyOpener = Callable[[str, optuna.samplers.BaseSampler], optuna.Study]


@dataclass
class Environment:
    """Where a search runs, as the application supplies it: where results go (`record`), the
    folder for resume state and the strategy's own files (`folder`), the live display
    (`progress`: strategies add tasks to it), the run's Optuna study (`open_study(name,
    sampler)`; None: an in-memory study), the processes sharing the evaluation (`shared`,
    with `--storage`) and the store of networks that training strategies finish (`trained`).
    Strategies never see the run directory's layout."""

    record: Callable[[Result], None]
    folder: Path
    progress: Progress | None = None
    open_study: StudyOpener | None = None
    shared: SharedEvaluation | None = None
    trained: TrainedNetworks | None = None


class SearchContext:
    """What a strategy receives: the `problem`, the `env`ironment, the budget and the seed.
    Results enter the run only through `submit` (recorded and counted once); `evaluate` scores
    archs and submits the new ones. Resume state goes through `save_state`/`load_state` only,
    a strategy's own files through `output_path`. `batch_size`: how many candidates an ask/tell
    round asks for. The problem's and the environment's parts are also attributes of the
    context (`ctx.space`, `ctx.evaluator`, `ctx.progress`, ...)."""

    def __init__(self, problem: Problem, env: Environment, budget: Budget, seed: int, *,
                 n_evals: int = 0, batch_size: int = 8) -> None:
        self.problem = problem
        self.env = env
        self.budget = budget
        self.seed = seed
        self.batch_size = batch_size
        self.state_dir = env.folder
        self.started = time.monotonic()
        self._archive = _Archive(env.record, n_evals)

    space = property(lambda self: self.problem.space)
    evaluator = property(lambda self: self.problem.evaluator)
    axis = property(lambda self: self.problem.axis)
    latency_gate = property(lambda self: self.problem.latency_gate)
    model = property(lambda self: self.problem.model)
    training = property(lambda self: self.problem.training)
    progress = property(lambda self: self.env.progress)
    shared = property(lambda self: self.env.shared)

    def uniform_start(self) -> list[Arch]:
        """The uniform networks a search starts from (`seed_uniform`): the width sweep, or,
        when latency is the axis or limits the search, the compound grid of widths and depths:
        MACs fall with width squared, small-batch latency mostly with depth (per-layer
        overhead: benchmarks/README.md, "Latency table accuracy")."""
        if self.axis.name == "latency" or self.latency_gate is not None:
            return self.space.compound_grid()
        return self.space.uniform_sweep()

    def output_path(self, name: str) -> Path:
        """Where the strategy writes a file of its own (a plot, a table) for the user."""
        self.env.folder.mkdir(parents=True, exist_ok=True)
        return self.env.folder / name

    def open_study(self, name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        """The Optuna study `name` of the run (created or reopened), with two minimized
        objectives, as `objectives` gives them."""
        if self.env.open_study is None:
            return optuna.create_study(study_name=name, directions=DIRECTIONS, sampler=sampler)
        return self.env.open_study(name, sampler)

    @property
    def n_evals(self) -> int:
        """New evaluations so far (resumed ones included), children's too."""
        return self._archive.n_evals

    def child(self, space: Space | Any, budget: Budget, state_dir: Path) -> SearchContext:
        """A context for one phase of a strategy: another (sub)space and budget, its own
        state folder, the same archive, count, clock and resources."""
        child = copy.copy(self)
        child.problem = dataclasses.replace(self.problem, space=space)
        child.budget, child.state_dir = budget, state_dir
        return child

    def remaining(self) -> int:
        return max(0, self.budget.max_evals - self.n_evals)

    def out_of_time(self) -> bool:
        limit = self.budget.time_limit
        return limit is not None and time.monotonic() - self.started >= limit

    def done(self) -> bool:
        return self.remaining() == 0 or self.out_of_time()

    def submit(self, result: Result) -> None:
        """Record a new result in the run and count it against the budget."""
        self._archive.n_evals += 1
        self._archive.record(self.evaluator.with_latency(result))

    def over_limit(self, arch: Arch) -> Result | None:
        """The failed, unrecorded answer for an arch over the latency limit; None when it
        fits (or there is no limit). Costs a table lookup, or near the limit one timing
        of the arch; no evaluation."""
        gate = self.latency_gate
        reason = gate.over(arch) if gate is not None else None
        if reason is None:
            return None
        space = self.evaluator.space  # the whole space (a phase may search a subspace)
        return Result(arch, space.macs(arch), space.params(arch), None, 0.0, "failed", reason,
                      latency_us=round(gate.predict(arch), 3))  # type: ignore[union-attr]

    def known(self, arch: Arch) -> Result | None:
        """What asking for `arch` again answers at no cost: its cached result, or the
        over-the-limit answer; None when it would need an evaluation."""
        return self.over_limit(arch) or self.evaluator.cached(arch)

    def evaluate(self, archs: Sequence[Arch]) -> list[Result]:
        """Evaluate in order; a new (uncached) result is submitted once. An arch over the
        latency limit is answered as failed without evaluating or recording it. In a shared
        study, the processes working on it evaluate them."""
        if self.shared is not None:
            return self.shared.evaluate(self, list(archs))
        results = []
        for arch in archs:
            known = self.known(arch)
            if known is None and self.done():
                break
            result = known or self.evaluator.evaluate([arch])[0]
            if known is None:
                self.submit(result)
            results.append(result)
        return results

    def objectives(self, result: Result) -> tuple[float, float]:
        """The result's two minimized values on the run's axis (`trials.minimized`)."""
        return minimized(result, self.axis)

    # --- resume state ----------------------------------------------------------------------
    def save_state(self, name: str, obj: Any) -> Path:
        """Persist resume state atomically: `<name>.json`, or `<name>.pt` (torch.save) when it
        holds tensors or integer dict keys. Only tensors, numbers, strings, lists and dicts:
        nothing a tampered file could use to run code when it is read back."""
        tensors = _needs_torch(obj, name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if tensors:
            path = self.state_dir / f"{name}.pt"
            write_torch(path, obj)
            (self.state_dir / f"{name}.json").unlink(missing_ok=True)
        else:
            path = self.state_dir / f"{name}.json"
            write_json(path, obj)
            (self.state_dir / f"{name}.pt").unlink(missing_ok=True)
        return path

    def load_state(self, name: str) -> Any | None:
        """What `save_state(name, ...)` saved last, or None. JSON, or torch.load with
        weights_only=True: reading state never runs code."""
        for suffix in (".json", ".pt"):
            path = self.state_dir / f"{name}{suffix}"
            if not path.exists():
                continue
            try:
                if suffix == ".json":
                    return json.loads(path.read_text())
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise UserError(f"Resume state '{path}' cannot be read "
                                f"({load_error_reason(err)}); it was "
                                f"edited or corrupted. Delete it to redo that part of the "
                                f"search, or start a new run.") from None
        return None

    def clear_state(self, name: str) -> None:
        for suffix in (".json", ".pt"):
            (self.state_dir / f"{name}{suffix}").unlink(missing_ok=True)


class Strategy(ABC):
    """`search(ctx)` until the budget is spent. `options` is an instance of the options model
    the strategy was registered with (None when it takes none)."""

    name: ClassVar[str]
    options_model: ClassVar[type[Options] | None] = None
    needs_training: ClassVar[bool] = False  # reads the problem's training kit (data, recipe)
    # The cost axes it can trade accuracy against (search.objective; search.max_latency
    # needs "latency" here).
    axes: ClassVar[tuple[str, ...]] = OBJECTIVES
    keeps_study: ClassVar[bool] = False  # records its candidates in the run's Optuna study

    def __init__(self, options: Options | None = None) -> None:
        self.options = options

    @abstractmethod
    def search(self, ctx: SearchContext) -> None:
        """Search until the budget is spent, evaluating through `ctx.evaluate`."""


class TrainingStrategy(Strategy):
    """A strategy that trains its networks to their final weights itself (imp, bip,
    random-masks): it needs the problem's training kit, keeps each finished network in the
    environment's `trained` store, and no fine-tuning stage follows it."""

    needs_training = True

    def search(self, ctx: SearchContext) -> None:
        if ctx.training is None or ctx.env.trained is None:
            raise ConfigError(f"search.strategy = '{self.name}' trains networks and needs the "
                              f"training data and a run folder; run it through "
                              f"`prunesearch run` or prunesearch.search().")
        self.train(ctx, ctx.training)

    @abstractmethod
    def train(self, ctx: SearchContext, kit: TrainingKit) -> None:
        """Train networks until the budget is spent, submitting each finished one through
        `ctx.submit` and keeping it in `ctx.env.trained`."""


class AskTellStrategy(Strategy):
    """`search` is a thin loop over `ask` and `tell`, like optuna's `optimize`; each round
    asks for `ctx.batch_size` candidates."""

    def start(self, ctx: SearchContext) -> None:  # noqa: B027 - optional hook
        """Set up state (and restore it on resume) before the first ask."""

    @abstractmethod
    def ask(self, ctx: SearchContext, n: int) -> list[Arch]:
        """Up to `n` archs to evaluate next; an empty list ends the search."""

    def tell(self, ctx: SearchContext, archs: list[Arch], results: list[Result]) -> None:  # noqa: B027
        """Learn from the results of the last ask (same order; may be shorter at budget end)."""

    def search(self, ctx: SearchContext) -> None:
        self.start(ctx)
        stale = 0
        while not ctx.done() and stale < MAX_STALE_ROUNDS:
            archs = self.ask(ctx, min(ctx.batch_size, ctx.remaining()))
            if not archs:
                break
            before = ctx.n_evals
            results = ctx.evaluate(archs)
            self.tell(ctx, archs, results)
            stale = stale + 1 if ctx.n_evals == before else 0
