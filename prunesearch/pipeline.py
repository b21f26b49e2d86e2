"""One job: config -> data + dense model -> space -> strategy with evaluator -> run directory."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunesearch.config import RunConfig
from prunesearch.data import DatasetSplits, load_dataset
from prunesearch.errors import ConfigError, UserError
from prunesearch.evaluators import Result, WeightSharingEvaluator
from prunesearch.models import dense_model, evaluate_accuracy
from prunesearch.runs import RunDir
from prunesearch.search import Budget, SearchContext, create_strategy
from prunesearch.spaces import Space

log = logging.getLogger("prunesearch")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use "
                        "--device cpu or auto.")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got '{name}'.")
    return torch.device(name)


def build_space(cfg: RunConfig, model: torch.nn.Module, data: DatasetSplits) -> Space:
    example = data.train_x[:1]
    return Space.from_model(model, example, cfg.space.width_ratios, cfg.space.depth,
                            cfg.space.ignore)


def calibration_images(cfg: RunConfig, data: DatasetSplits) -> torch.Tensor:
    """The fixed training images every candidate's BatchNorm is recalibrated on."""
    n = cfg.evaluator.calib_batches * cfg.evaluator.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(data.train_x), generator=g)[:n]
    return data.train_x[idx.to(data.train_x.device)]


def make_evaluator(cfg: RunConfig, space: Space, model: torch.nn.Module,
                   data: DatasetSplits) -> WeightSharingEvaluator:
    n_val = cfg.evaluator.val_images
    if n_val > len(data.val_x):
        raise ConfigError(f"evaluator.val_images ({n_val}) exceeds the validation split "
                          f"({len(data.val_x)} examples); lower evaluator.val_images or raise "
                          f"data.val_size.")
    return WeightSharingEvaluator(space, model, calibration_images(cfg, data),
                                  data.val_x[:n_val], data.val_y[:n_val],
                                  cfg.evaluator.batch_size)


@dataclass
class JobOutcome:
    run_dir: Path
    summary: dict[str, Any]


class _SearchProgress:
    """A progress bar over the evaluation budget, with the best accuracy so far."""

    def __init__(self, total: int, done: int, console: Console, enabled: bool) -> None:
        self.progress = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                                 console=console, disable=not enabled)
        self.task = self.progress.add_task("search", total=total, completed=done, status="")
        self.best = 0.0

    def update(self, result: Result) -> None:
        if result.ok:
            self.best = max(self.best, result.val_acc)
        self.progress.update(self.task, advance=1, status=f"best proxy acc {self.best:.4f}")


def run_job(cfg: RunConfig, out: Path, resume: bool = False, device: str = "auto",
            progress: bool = True, console: Console | None = None) -> JobOutcome:
    console = console or Console(stderr=True)
    dev = resolve_device(device)
    run = RunDir.open(out, cfg, resume)
    handler = run.attach_log()
    try:
        return _run(cfg, run, dev, progress, console)
    finally:
        logging.getLogger("prunesearch").removeHandler(handler)
        handler.close()


def _run(cfg: RunConfig, run: RunDir, dev: torch.device, progress: bool,
         console: Console) -> JobOutcome:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    log.info("run %s: %s on %s, strategy %s, budget %d", cfg.name, cfg.model.name,
             cfg.data.dataset, cfg.search.strategy, cfg.search.budget)
    strategy = create_strategy(cfg.search.strategy, batch_size=cfg.search.batch_size,
                               seed_uniform=cfg.search.seed_uniform)
    data = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.val_size, cfg.seed,
                        cfg.data.download).to(dev)
    timings["data_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    model, dense = dense_model(cfg.model, data, seed=cfg.seed, device=dev, progress=progress)
    model.eval()
    timings["dense_s"] = time.perf_counter() - t
    log.info("dense model: %s", {k: dense.get(k) for k in ("val_acc", "test_acc", "cached")})
    t = time.perf_counter()
    space = build_space(cfg, model, data)
    evaluator = make_evaluator(cfg, space, model, data)
    timings["space_s"] = time.perf_counter() - t
    journal = run.journal(space.dense_macs)
    evaluator.seed_cache(c.result for c in journal.candidates)
    log.info("space: %d dimensions, dense %d MACs, %d params; %d candidates already in the "
             "journal", len(space.dims), space.dense_macs, space.dense_params,
             len(journal.candidates))

    bar = _SearchProgress(cfg.search.budget, len(journal.candidates), console, progress)

    def record(result: Result) -> None:
        journal.append(result, strategy.name)
        bar.update(result)

    ctx = SearchContext(space, evaluator, Budget(cfg.search.budget, cfg.search.time_limit),
                        cfg.seed, run.path, record, n_evals=len(journal.candidates),
                        width_ratios=cfg.space.width_ratios)
    t = time.perf_counter()
    with bar.progress:
        strategy.search(ctx)
    timings["search_s"] = time.perf_counter() - t
    dense_ref = {
        "macs": space.dense_macs, "params": space.dense_params,
        "val_acc": evaluate_accuracy(model, evaluator.val_x, evaluator.val_y),
        "val_acc_note": "the dense model itself on the evaluator's validation subset",
        "test_acc": dense.get("test_acc"), "checkpoint": dense.get("checkpoint"),
        "train_seconds": dense.get("seconds"), "cached": dense.get("cached"),
    }
    timings["total_s"] = time.perf_counter() - t0
    summary = run.write_results(journal.candidates, dense_ref, {
        "name": cfg.name, "strategy": strategy.name, "dataset": cfg.data.dataset,
        "model": cfg.model.name, "device": str(dev), "wall_s": timings["total_s"],
        "timings": timings, "seed": cfg.seed,
    }, f"{cfg.name}: {cfg.model.name} on {cfg.data.dataset}, {strategy.name}")
    log.info("done: %d candidates, front %d, hypervolume %.4f, %.1f s", summary["n_evals"],
             summary["front_size"], summary["hypervolume"]["value"], timings["total_s"])
    return JobOutcome(run.path, summary)
