"""Helpers of the benchmarks that compare fine-tuned points of several runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunesearch.config import load_config
from prunesearch.evaluators import Result
from prunesearch.pipeline import Prepared, finetune_run, prepare, run_job
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.spaces import Arch


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


@dataclass
class Searched:
    """A finished weight-sharing search (the default job's TPE unless overridden) and the
    weights it scored candidates on (the dense model, or the supernet stage's)."""

    prep: Prepared
    results: list[Result]  # the successful candidates
    supernet_s: float
    search_s: float

    def best_under(self, target: float) -> Arch:
        """The best proxy candidate at or under `target` x dense MACs (what the product
        fine-tunes for that target)."""
        limit = target * self.prep.space.dense_macs
        return max((r for r in self.results if r.macs <= limit), key=lambda r: r.val_acc).arch


def searched(overrides: list[str], out: Path, name: str, device: torch.device) -> Searched:
    """Search without fine-tuning (the supernet stage included when the overrides ask), then
    load the weights it scored on (from the checkpoint cache)."""
    run_dir, cands, _ = search(None, overrides, out, name)
    summary = json.loads((run_dir / "summary.json").read_text())
    prep = prepare(load_config(None, overrides), device, progress=False)
    return Searched(prep, [c.result for c in cands if c.result.ok],
                    (summary.get("supernet") or {}).get("seconds", 0.0),
                    summary["timings"]["search_s"])
