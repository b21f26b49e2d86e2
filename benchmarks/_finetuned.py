"""Helpers of the benchmarks that compare fine-tuned points of several runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prunesearch.config import load_config
from prunesearch.pipeline import finetune_run, run_job
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal


def search(config: Path | None, base: list[str], out: Path, name: str,
           *overrides: str) -> tuple[Path, list, float]:
    """Run a search without fine-tuning; (run dir, candidates, wall seconds)."""
    cfg = load_config(config, base + [f"name={name}", "finetune.enabled=false", *overrides])
    start = time.perf_counter()
    outcome = run_job(cfg, out / name, progress=False)
    wall = time.perf_counter() - start
    return outcome.run_dir, read_journal(outcome.run_dir / "candidates.csv"), wall


def finetune(run_dir: Path, ids: list[int], *overrides: str) -> dict[int, dict[str, Any]]:
    """Fine-tune the candidates `ids` of a run; their finetune.csv rows by id."""
    finetune_run(run_dir, [f"finetune.ids={sorted(set(ids))}", *overrides], progress=False)
    return {r["id"]: r for r in read_finetuned(run_dir) if r["id"] in ids}
