"""Helpers of the benchmarks that compare fine-tuned points of several runs."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunesearch.app.config import load_config
from prunesearch.app.finetune import finetune_recipe, finetune_run
from prunesearch.app.prepare import Prepared, prepare
from prunesearch.app.run import run_job
from prunesearch.config import RunConfig
from prunesearch.evaluators import Result
from prunesearch.models.options import TrainConfig
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


EVERY_IMAGE = 60_000  # Fashion-MNIST's training set: a prefix this long is all of it


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark that runs the default job's search shares."""
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--search-budget", type=int, default=240)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-train-images", type=int, default=None,
                        help="train everything on a prefix (a quick check of the script only)")


def training_overrides(model: str, dense_epochs: int, max_train_images: int | None) -> list[str]:
    """Config overrides of a benchmark's jobs: the default job on `model` with D dense epochs,
    and every training stage on the same images (all, or the `--max-train-images` prefix), so
    a supernet epoch is a whole epoch like every other row's, whatever prefix the default job
    trains its supernet on."""
    images = max_train_images or EVERY_IMAGE
    return [f"model.name={model}", f"model.train.epochs={dense_epochs}",
            *([f"model.train.max_train_images={max_train_images}"] if max_train_images else []),
            f"supernet.max_train_images={images}"]


def full_finetune_recipe(cfg: RunConfig, epochs: int) -> TrainConfig:
    """The product's fine-tuning recipe (learning rate and all) for `epochs`, on every training
    image the dense model saw, however cheaply the job itself fine-tunes its front."""
    return finetune_recipe(cfg).model_copy(update={
        "epochs": epochs, "max_train_images": cfg.model.train.max_train_images})


@dataclass
class Searched:
    """A finished weight-sharing search (the default job's TPE unless overridden) and the
    weights it scored candidates on (the dense model, or the supernet stage's)."""

    prep: Prepared
    results: list[Result]  # the successful candidates
    supernet_s: float
    search_s: float
    summary: dict[str, Any]  # the search run's summary.json

    def best_under(self, target: float, floor: float = 0.0) -> Arch:
        """The best proxy candidate at or under `target` x dense MACs (what the product
        fine-tunes for that target). With a `floor`, the best in [floor, target] x dense MACs
        where the search found any: a band-constrained search still scores its first,
        random population outside the band, and a much smaller network can out-score the
        in-band ones on the proxy while losing after training."""
        dense = self.prep.space.dense_macs
        under = [r for r in self.results if r.macs <= target * dense]
        in_band = [r for r in under if r.macs >= floor * dense]
        return max(in_band or under, key=lambda r: r.val_score).arch


def searched(overrides: list[str], out: Path, name: str, device: torch.device) -> Searched:
    """Search without fine-tuning (the supernet stage included when the overrides ask), then
    load the weights it scored on (from the checkpoint cache)."""
    run_dir, cands, _ = search(None, overrides, out, name)
    summary = json.loads((run_dir / "summary.json").read_text())
    prep = prepare(load_config(None, overrides), device, progress=False)
    return Searched(prep, [c.result for c in cands if c.result.ok],
                    (summary.get("supernet") or {}).get("seconds", 0.0),
                    summary["timings"]["search_s"], summary)
