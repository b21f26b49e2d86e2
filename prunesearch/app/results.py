"""What a job leaves: its summary and front (written by runs/ into the run folder, returned in
memory), its log and its progress display."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunesearch.app.prepare import Prepared
from prunesearch.config import RunConfig
from prunesearch.evaluators import Result
from prunesearch.front import FrontPoint
from prunesearch.runs.journal import Candidate
from prunesearch.runs.rundir import RunDir

log = logging.getLogger("prunesearch")


@dataclass
class JobOutcome:
    """A finished stage: the run folder, its summary and its front (test scores where the
    run's fine-tuning variant trained a point)."""

    run_dir: Path
    summary: dict[str, Any]
    front: list[FrontPoint]


class SearchProgress:
    """A progress bar over the evaluation budget, with the best score so far."""

    def __init__(self, total: int, done: int, console: Console, enabled: bool) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                                 console=console, disable=not enabled)
        self.task = self.progress.add_task("search", total=total, completed=done, status="")
        self.best = 0.0

    def update(self, result: Result) -> None:
        if result.ok:
            self.best = max(self.best, result.val_score)
        self.progress.update(self.task, advance=1, status=f"best proxy score {self.best:.4f}")


@contextmanager
def logging_to(run: RunDir, console: Console | None = None) -> Iterator[None]:
    """While open, the prunesearch logger writes the run's log.txt and, given a console,
    shows the same lines to the user (a generation's summary, the stages' results)."""
    handlers = [run.attach_log()]
    if console is not None:
        handlers.append(RichHandler(console=console, show_path=False, show_level=False))
        logging.getLogger("prunesearch").addHandler(handlers[-1])
    try:
        yield
    finally:
        for handler in handlers:
            logging.getLogger("prunesearch").removeHandler(handler)
            handler.close()


def write_results(cfg: RunConfig, run: RunDir, prep: Prepared, candidates: list[Candidate],
                  strategy: str, t0: float, finetuned: list[dict[str, Any]],
                  variant: str | None) -> JobOutcome:
    """Write the run's front, summary and plots from its candidates and trained networks
    (`variant`: the fine-tuning whose test scores the front shows), and return them."""
    ev = prep.evaluator
    dense_ref = {
        "macs": prep.space.dense_macs, "params": prep.space.dense_params,
        "val_score": prep.data.task.score(prep.model, ev.val_x, ev.val_y),
        "val_score_note": "the full network the candidates are sliced from (after the supernet "
                        "stage, if any) on the evaluator's validation subset; test_score is "
                        "the dense model's before it",
        "test_score": prep.dense_meta.get("test_score"),
        "checkpoint": prep.dense_meta.get("checkpoint"),
        "train_seconds": prep.dense_meta.get("seconds"), "cached": prep.dense_meta.get("cached"),
        "latency_us": prep.cost_axis("latency").dense if prep.latency else None,
    }
    prep.timings["total_s"] = time.perf_counter() - t0
    axis = prep.cost_axis(cfg.search.objective)
    summary, front = run.write_results(candidates, dense_ref, {
        "name": cfg.name, "strategy": strategy, "dataset": cfg.data.dataset,
        "metric": prep.data.task.metric.to_json(),
        "model": cfg.model.name, "device": str(prep.data.train_x.device),
        "wall_s": prep.timings["total_s"], "timings": prep.timings, "seed": cfg.seed,
        "sparse_macs": prep.space.masked, "supernet": prep.supernet_meta,
        "latency_table": prep.latency.meta if prep.latency else None,
        "latency_limit": ({**prep.limit.to_dict(), **prep.gate.to_dict()}
                          if prep.limit and prep.gate else None),
        "input_normalization": prep.data.input_normalization(),
    }, f"{cfg.name}: {cfg.model.name} on {cfg.data.dataset}, {strategy}", finetuned,
        variant if finetuned else None, axis)
    log.info("results: %d candidates, front %d, hypervolume %.4f, %.1f s", summary["n_evals"],
             summary["front_size"], summary["hypervolume"]["value"], prep.timings["total_s"])
    return JobOutcome(run.path, summary, front)
