"""`prunesearch run`: search, then fine-tune the chosen front points. The front goes from the
search to fine-tuning in memory; the run folder is written as it goes, for resume and for the
user."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from prunesearch.app.config import load_config
from prunesearch.app.finetune import finetune_and_write, variant_name
from prunesearch.app.prepare import Given, Prepared, prepare, resolve_device
from prunesearch.app.results import JobOutcome, SearchProgress, logging_to, write_results
from prunesearch.config import RunConfig, config_to_toml
from prunesearch.errors import UserError
from prunesearch.evaluators import Result
from prunesearch.fileio import file_sha256
from prunesearch.front import front_of, points_by_id
from prunesearch.objective import CostAxis
from prunesearch.runs.finetuned import TrainedArchive, read_finetuned
from prunesearch.runs.rundir import CONFIG, RunDir
from prunesearch.scaleout.driver import SharedSearch
from prunesearch.scaleout.study import StudyRecorder, open_run_study
from prunesearch.scaleout.tables import SharedStudy
from prunesearch.strategies import (
    Budget,
    Environment,
    Problem,
    SearchContext,
    Strategy,
    TrainingStrategy,
    create_strategy,
)

log = logging.getLogger("prunesearch")

# Keys a resumed run may change: extending the budget is the point of resuming.
RESUMABLE_CHANGES = {"search.budget", "search.time_limit"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def changed_keys(cfg: RunConfig) -> Callable[[Path], list[str]]:
    """For resume: the keys of the config saved in a run folder that `cfg` changes and may
    not (only the budget may grow)."""
    def changed(path: Path) -> list[str]:
        before = _flat(load_config(path / CONFIG, run_dir=path).model_dump())
        after = _flat(cfg.model_dump())
        return sorted(k for k in before.keys() | after.keys()
                      if before.get(k) != after.get(k) and k not in RESUMABLE_CHANGES)
    return changed


def check_objective(cfg: RunConfig, axes: tuple[str, ...]) -> None:
    """Refuse, before any work, an objective or latency limit the strategy cannot search."""
    wanted = [cfg.search.objective] + (["latency"] if cfg.search.max_latency else [])
    for name in wanted:
        if name not in axes:
            raise UserError(
                f"search.strategy = '{cfg.search.strategy}' trades accuracy against "
                f"{' or '.join(axes)} only, so search.objective = '{cfg.search.objective}'"
                f"{' with search.max_latency' if cfg.search.max_latency else ''} cannot be "
                f"searched with it; use tpe, random, emo, emo-pms or dp for latency or params, "
                f"or search.objective = 'macs' without search.max_latency.")


def check_latency_limit(cfg: RunConfig, prep: Prepared) -> None:
    """Refuse, before the search, a latency limit no architecture of the space meets by the
    table's prediction, corrected near the limit (the search would evaluate nothing)."""
    if prep.limit is None:
        return
    space, predict = prep.space, prep.cost_axis("latency")
    fastest = min([space.smallest(), *space.compound_grid()], key=predict.arch_ratio)
    ratio = predict.arch_ratio(fastest) * prep.limit.scale
    if ratio > cfg.search.max_latency:
        raise UserError(f"search.max_latency = {cfg.search.max_latency} of the dense model's "
                        f"predicted latency ({predict.dense / 1000:.3f} ms) is below what any "
                        f"architecture of the space reaches: the fastest, {fastest.to_json()}, "
                        f"is predicted at {ratio:.3f} of dense. Raise search.max_latency to at "
                        f"least {ratio:.3f}, or let the space go smaller (space.width_ratios, "
                        f"space.depth = true).")


def open_storage(cfg: RunConfig, strategy: Strategy) -> SharedStudy | None:
    """The run's shared study (not created yet) when `search.storage` asks for one."""
    if cfg.search.storage is None:
        return None
    if isinstance(strategy, TrainingStrategy):
        raise UserError(f"search.strategy = '{strategy.name}' trains its own networks inside "
                        f"the run, while search.storage shares the evaluation of candidates "
                        f"among processes; use a strategy that evaluates candidates (tpe, "
                        f"random, emo, emo-pms, dp, tas, uniform, ...) or drop search.storage.")
    return SharedStudy(cfg.search.storage, cfg.name)


def share_search(shared: SharedStudy, cfg: RunConfig, prep: Prepared, strategy: Strategy,
                 resume: bool, axis: CostAxis, recorded: list[Result]) -> SharedSearch:
    """Create (or reopen) the run's study and publish what workers need."""
    weights = (prep.supernet_meta or prep.dense_meta).get("checkpoint")
    if weights is None:
        raise UserError("The dense model could not be saved to the cache folder, and workers "
                        "of a shared study read the weights from there; make PRUNESEARCH_CACHE "
                        "a writable folder (shared with the workers' machines).")
    path = Path(weights).resolve()
    mode = "sample" if strategy.keeps_study else "queue"
    shared.create(resume=resume, config_toml=config_to_toml(cfg), mode=mode,
                  order=prep.space.channel_order(),
                  weights={"path": str(path), "sha256": file_sha256(path),
                           "data": prep.data.fingerprint()},
                  budget=cfg.search.budget, axis=axis)
    log.info("shared study '%s' in %s (%s mode): workers join with `prunesearch worker "
             "--storage URL --study %s`", cfg.name, shared.display_url, mode, cfg.name)
    return SharedSearch(shared, mode, recorded)


def run_job(cfg: RunConfig, out: Path, resume: bool = False, device: str = "auto",
            progress: bool = True, console: Console | None = None,
            given: Given | None = None,
            on_start: Callable[[Path, Prepared], None] | None = None) -> JobOutcome:
    """Search, then (unless finetune.enabled is false) fine-tune the chosen front points.
    `given`: the Python API's network and data in place of the config's names; `on_start`
    is called once the run folder and the dense model exist (the API saves the given
    weights there)."""
    console = console or Console(stderr=True)
    dev = resolve_device(device)
    strategy = create_strategy(cfg.search.strategy, cfg.search.options_of(cfg.search.strategy))
    check_objective(cfg, strategy.axes)
    if cfg.search.storage is not None and given is not None:
        raise UserError("search.storage shares the evaluation with `prunesearch worker` "
                        "processes, which rebuild the network and data by name; a network or "
                        "datasets handed over in Python have none. Drop search.storage, or "
                        "name them in the config (model.name, data.dataset).")
    storage = open_storage(cfg, strategy)  # a bad URL or server fails before any work
    with (RunDir.open(out, cfg.name, config_to_toml(cfg), resume, changed_keys(cfg)) as run,
          logging_to(run, console if progress else None)):
        t0 = time.perf_counter()
        log.info("run %s: %s on %s, strategy %s, budget %d", cfg.name, cfg.model.name,
                 cfg.data.dataset, cfg.search.strategy, cfg.search.budget)
        try:
            prep = prepare(cfg, dev, progress, given=given)
            check_latency_limit(cfg, prep)
            if on_start is not None:
                on_start(run.path, prep)
            journal = run.journal(prep.space.dense_macs)
            axis = prep.cost_axis(cfg.search.objective)
            recorded = [c.result for c in journal.candidates]
            shared = (share_search(storage, cfg, prep, strategy, resume, axis, recorded)
                      if storage else None)
        except BaseException:
            if run.created:  # bad data, model or study: leave nothing that blocks a re-run
                run.discard()
            raise
        prep.evaluator.seed_cache(recorded)
        log.info("space: %d dimensions, dense %d MACs, %d params; %d candidates already in "
                 "the journal", len(prep.space.dims), prep.space.dense_macs,
                 prep.space.dense_params, len(journal.candidates))
        bar = SearchProgress(cfg.search.budget, len(journal.candidates), console, progress)

        study = (None if strategy.keeps_study or shared else  # they ask and tell their own
                 StudyRecorder(run.path, strategy.name, prep.space, axis, recorded))

        def record(result: Result) -> None:
            journal.append(result, strategy.name)
            if study is not None:
                study.add(result)
            bar.update(result)

        problem = Problem(prep.space, prep.evaluator, axis, prep.gate, prep.model,
                          prep.training_kit(cfg, dev, given))
        env = Environment(record, run.path, bar.progress if progress else None,
                          partial(open_run_study, run.path), shared, TrainedArchive(run.path))
        ctx = SearchContext(problem, env, Budget(cfg.search.budget, cfg.search.time_limit),
                            cfg.seed, n_evals=len(journal.candidates),
                            batch_size=cfg.search.batch_size)
        t = time.perf_counter()
        with bar.progress, shared.shared.run_beating() if shared else nullcontext():
            strategy.search(ctx)
        if shared is not None:
            shared.shared.announce_done()  # the workers stop
        prep.timings["search_s"] = time.perf_counter() - t
        trains = isinstance(strategy, TrainingStrategy)
        outcome = write_results(cfg, run, prep, journal.candidates, strategy.name, t0,
                                read_finetuned(run.path) if trains else [], variant_name(cfg))
        if trains:
            log.info("%s trained its networks itself: no fine-tuning stage", strategy.name)
        elif cfg.finetune.enabled:
            ids, dense = cfg.finetune.ids, prep.space.dense_macs
            front = (points_by_id(journal.candidates, ids, axis, dense, "the run") if ids
                     else front_of(journal.candidates, axis, dense))
            outcome = finetune_and_write(cfg, run, prep, dev, progress, t0, front)
        return outcome
