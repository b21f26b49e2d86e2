"""`prunesearch finetune` and the run's fine-tuning stage: the run config turned into a
fine-tuning plan, the points chosen from the front, trained, and the results rewritten."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from prunesearch.app.config import load_config
from prunesearch.app.prepare import Given, Prepared, prepare, resolve_device
from prunesearch.app.results import JobOutcome, logging_to, write_results
from prunesearch.config import RunConfig
from prunesearch.errors import UserError
from prunesearch.front import FrontPoint
from prunesearch.models.options import TrainConfig
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.runs.rundir import RunDir, RunView
from prunesearch.strategies.registry import strategy_trains
from prunesearch.training import distributed
from prunesearch.training.finetune import FinetunePlan, choose_points, finetune_front
from prunesearch.training.loop import ScheduleSpan, continued_span


def variant_name(cfg: RunConfig) -> str:
    """The run's main variant: how its front was fine-tuned, or the strategy's name for a
    strategy that trains its own networks."""
    if strategy_trains(cfg.search.strategy):
        return cfg.search.strategy
    ft = cfg.finetune
    name = f"{ft.init}-{'kd' if ft.kd else 'ce'}-e{epochs_of(cfg)}"
    if finetune_span(cfg):
        name += f"-cont{cfg.model.train.schedule_epochs}"
    elif ft.lr is not None:
        name += f"-lr{ft.lr:g}"
    if ft.max_train_images is not None:
        name += f"-n{ft.max_train_images}"
    return name


def epochs_of(cfg: RunConfig) -> int:
    """finetune.epochs; by default the epochs left of the dense recipe's longer schedule
    (after the dense and supernet epochs), or the dense epochs when it has none."""
    return cfg.finetune.epochs or cfg.schedule_epochs_left() or cfg.model.train.epochs


def finetune_span(cfg: RunConfig) -> ScheduleSpan | None:
    """Where fine-tuning sits on the dense recipe's longer schedule: after the epochs its
    weights have had (None: no such schedule, or `init = "scratch"`, which starts over)."""
    if cfg.finetune.init == "scratch":
        return None
    return continued_span(cfg.model.train, cfg.epochs_before_finetuning(), epochs_of(cfg))


def finetune_recipe(cfg: RunConfig) -> TrainConfig:
    """The dense recipe with the fine-tuning stage's epochs, learning rate and images (the
    dense lr when fine-tuning continues its schedule)."""
    ft, dense = cfg.finetune, cfg.model.train
    lr = dense.lr if finetune_span(cfg) else ft.lr or dense.lr
    return dense.model_copy(update={
        "epochs": epochs_of(cfg), "lr": lr,
        "max_train_images": ft.max_train_images or dense.max_train_images})


def finetune_plan(cfg: RunConfig) -> FinetunePlan:
    return FinetunePlan(cfg.finetune, variant_name(cfg), finetune_recipe(cfg),
                        finetune_span(cfg), cfg.seed)


def chosen_front(cfg: RunConfig, run_dir: Path) -> list[FrontPoint]:
    """The front points fine-tuning chooses from, read back from a finished run, with the
    files it reads checked: a tampered journal or finetune.csv, or targets that choose
    nothing, are UserErrors."""
    view = RunView.load(run_dir)
    front = view.candidate_points(cfg.finetune.ids) if cfg.finetune.ids else view.front
    choose_points(front, cfg.finetune)
    read_finetuned(run_dir)
    return front


def finetune_and_write(cfg: RunConfig, run: RunDir, prep: Prepared, dev: torch.device,
                       progress: bool, t0: float, front: list[FrontPoint]) -> JobOutcome:
    """Fine-tune the chosen points of `front` and rewrite the run's results with them."""
    t = time.perf_counter()
    source = prep.finetune_source(cfg)
    finetune_front(finetune_plan(cfg), run.path, front, prep.space.slicer(source), source,
                   prep.data, dev, progress)
    prep.timings["finetune_s"] = time.perf_counter() - t
    return write_results(cfg, run, prep, read_journal(run.path / "candidates.csv"),
                         cfg.search.strategy, t0, read_finetuned(run.path), variant_name(cfg))


def finetune_run(run_dir: Path, overrides: list[str], device: str = "auto",
                 progress: bool = True, console: Console | None = None,
                 given: Given | None = None) -> JobOutcome | None:
    """`prunesearch finetune`: fine-tune a finished search's front (again, or another way:
    only `finetune.*` keys may be overridden). Under torchrun every process trains and the
    first one holds the run folder and writes it; the others return None."""
    bad = [o for o in overrides if not o.strip().startswith("finetune.")]
    if bad:
        raise UserError(f"prunesearch finetune only accepts finetune.* overrides, got {bad}; "
                        f"other keys would change what was searched.")
    cfg = load_config(run_dir / "config.toml", overrides, run_dir)
    if strategy_trains(cfg.search.strategy):
        raise UserError(f"'{run_dir}' was searched by {cfg.search.strategy}, which trains its "
                        f"networks itself (see its finetune.csv); fine-tune the front of a "
                        f"weight-sharing search (dp, global-magnitude, tpe, ...) instead.")
    if not (run_dir / "pareto.json").exists():
        raise UserError(f"'{run_dir}' has no pareto.json: finish its search first with "
                        f"`prunesearch run CONFIG --resume`.")
    dev = resolve_device(device)
    distributed.init_from_env(dev)
    if not distributed.is_main():  # a helper: trains each point with the first process
        prep = prepare(cfg, dev, progress=False, given=given)
        source = prep.finetune_source(cfg)
        finetune_front(finetune_plan(cfg), run_dir, chosen_front(cfg, run_dir),
                       prep.space.slicer(source), source, prep.data, dev, False)
        return None
    with (RunDir.existing(run_dir) as run,
          logging_to(run, (console or Console(stderr=True)) if progress else None)):
        t0 = time.perf_counter()
        front = chosen_front(cfg, run.path)  # before any training: bad input fails at once
        prep = prepare(cfg, dev, progress, given=given)
        return finetune_and_write(cfg, run, prep, dev, progress, t0, front)
