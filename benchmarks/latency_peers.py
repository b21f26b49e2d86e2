"""At a MEASURED latency budget: prunesearch against the best uniformly scaled network (width x
depth) and Torch-Pruning, every network trained the same way.

One model, runtime and batch size per command, on Fashion-MNIST with the default job's data
split. The dense model trains D = `--dense-epochs` epochs of a (D + F)-epoch cosine schedule
(F = `--budget-epochs`). Latency is measured in this process, each network in turns with the
dense model (`latency_ratio`, median of the pairs) in `--runtime` (torch eager, or the network
exported to ONNX and run by onnxruntime's CPU provider) at `--batch`. Per target T
(`--targets`, ratios of the dense model's measured latency), each method offers its most
accurate network whose measured latency ratio is at most T; every choice is made on
validation data, never on test:

- uniform-compound: the compound grid (every width ratio x every count of blocks kept per
  stage, the same in every stage: `prunesearch run --set search.strategy=uniform`); the 2
  grid networks with the most MACs under T are trained from scratch for D + F epochs and the
  one with the better mean validation accuracy is reported (a network trained for one cell
  serves every cell it fits);
- tp-l1-local: Torch-Pruning's local L1 pruner (every layer cut by the same ratio) at the
  largest MACs ratio (bisected) whose measured latency is under T, fine-tuned F epochs
  continuing the dense schedule;
- prunesearch: the product's latency search (search.objective = latency, search.max_latency =
  T, the same runtime and batch, tpe) on a one-epoch supernet stage (12000 images) that only
  ranks candidates (the run corrects T by networks it measures near it, and times every
  candidate predicted near T: summary.json's latency_limit, kept in the row); of the 8
  best-proxy candidates, the 2 best whose MEASURED latency is under T (as many networks as
  uniform-compound trains per cell) are cut from the dense model and trained F epochs
  continuing the schedule (on fewer images per epoch, so that the supernet's and the
  fine-tuning's images make F epochs), and the one better on validation is reported;
- prunesearch-arch-scratch: those architectures trained from scratch for D + F epochs, like
  uniform-compound, the better on validation reported.

Training is labels only; seeds (`--seeds`) vary training and the from-scratch inits. Results:
benchmarks/results/latency_peers_<model>.json (a method, runtime, batch and target run again
replaces its row; written after each method) and the best-row table in benchmarks/README.md.
Every training's scores are kept in latency_trained_<model>.json the moment it ends
(keyed by network, recipe, data and seed; benchmarks/_trained.py): a network another cell or
command already trained the same way is not trained again.

    python benchmarks/latency_peers.py --model resnet20 --runtime torch --batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import add_job_arguments, searched, training_overrides  # noqa: E402
from _machine import RESULTS, command_line, machine, mean_std, publish, save_results  # noqa: E402
from _trained import TrainedCache  # noqa: E402
from peers import RANKING_IMAGES, Bench, count, tp_prune  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare, resolve_device  # noqa: E402
from prunesearch.latency import latency_ratio  # noqa: E402
from prunesearch.spaces import Arch  # noqa: E402

METHODS = ["uniform-compound", "tp-l1-local", "prunesearch", "prunesearch-arch-scratch"]
PAIRS = {1: 20, 64: 8}  # turns with the dense model per measurement, by batch size
GRID_CANDIDATES = 2  # uniform-compound networks trained per cell
PICK_CANDIDATES = 8  # prunesearch's best-proxy candidates re-measured per cell
BISECTIONS = 7


class Clock:
    """Measured latency ratios to the dense model, in one process, cached per architecture."""

    def __init__(self, dense: nn.Module, shape: tuple[int, ...], batch: int,
                 runtime: str) -> None:
        self.dense, self.shape, self.batch, self.runtime = dense, shape, batch, runtime
        self._seen: dict[Any, float] = {}

    def ratio(self, net: nn.Module, key: Any = None) -> float:
        if key is not None and key in self._seen:
            return self._seen[key]
        _, _, ratio = latency_ratio(net.eval(), self.dense, self.shape, self.batch,
                                    pairs=PAIRS.get(self.batch, 8), runtime=self.runtime)
        if key is not None:
            self._seen[key] = ratio
        return ratio


class Trainings:
    """The benchmark's two trainings, answered from the trained-scores cache when they ran."""

    def __init__(self, bench: Bench, cache: TrainedCache, model: str, cfg: Any) -> None:
        self.bench, self.cache = bench, cache
        self.recipe = {"model": model, "data": cfg.data.model_dump(mode="json"),
                       "train": cfg.model.train.model_dump(mode="json")}

    def scratch(self, arch: Arch, epochs: int) -> Any:
        return self.cache.wrap(self.bench.scratch(epochs), {
            **self.recipe, "kind": "scratch", "epochs": epochs, "arch": arch.to_dict()})

    def finetune(self, net: dict[str, Any], teacher: nn.Module, epochs: int, cfg: Any,
                 images: int | None = None) -> Any:
        """Fine-tuning of the network `net` names (an arch, or how it was pruned) cut from
        the dense model."""
        return self.cache.wrap(self.bench.finetune(teacher, epochs, cfg, images), {
            **self.recipe, "kind": "finetune", "epochs": epochs, "images": images,
            "finetune": cfg.finetune.model_dump(mode="json"), "net": net})


def uniform_rows(bench: Bench, runs: Trainings, clock: Clock, prep: Any,
                 targets: list[float], epochs: int) -> list[dict[str, Any]]:
    """Per target, the better (on validation) of the GRID_CANDIDATES largest grid networks
    under it, trained from scratch; a grid network is trained once for every cell."""
    space, slicer = prep.space, prep.space.slicer(prep.model)
    grid = {arch: clock.ratio(slicer.build(arch), arch) for arch in space.compound_grid()}
    trained: dict[Arch, dict[str, Any]] = {}
    rows = []
    for target in targets:
        under = sorted((a for a, r in grid.items() if r <= target), key=space.macs,
                       reverse=True)[:GRID_CANDIDATES]
        if not under:
            print(f"uniform-compound {target}: no grid network under it", flush=True)
            continue
        for arch in under:
            if arch not in trained:
                trained[arch] = bench.record("uniform-compound candidate", target,
                                             slicer.build(arch), 0.0, f"scratch {epochs}",
                                             runs.scratch(arch, epochs))
                trained[arch].update(arch=arch.to_dict(), latency_ratio=grid[arch])
        best = max(under, key=lambda a: statistics.mean(trained[a]["val_acc"]))
        rows.append({**trained[best], "method": "uniform-compound", "target": target,
                     "grid_candidates": [a.to_dict() for a in under]})
    return rows


def tp_rows(bench: Bench, runs: Trainings, clock: Clock, prep: Any, cfg: Any,
            targets: list[float], epochs: int) -> list[dict[str, Any]]:
    """Torch-Pruning local L1 at the largest MACs ratio (bisected) measured under T."""
    rows = []
    for target in targets:
        start = time.perf_counter()
        lo, hi, best = 0.0, 1.0, None
        for _ in range(BISECTIONS):
            mid = (lo + hi) / 2
            pruned = tp_prune(prep.model, prep.data, mid, False, False, seed=0)
            ratio = clock.ratio(pruned)
            if ratio <= target:
                lo, best = mid, (pruned, ratio, mid)
            else:
                hi = mid
        if best is None:
            print(f"tp-l1-local {target}: nothing under it", flush=True)
            continue
        row = bench.record("tp-l1-local", target, best[0], time.perf_counter() - start,
                           f"ft {epochs} (continuing)",
                           runs.finetune({"tp_l1_local_macs": best[2]}, prep.model, epochs, cfg))
        rows.append({**row, "latency_ratio": best[1]})
    return rows


def prunesearch_rows(bench: Bench, runs: Trainings, clock: Clock, base: list[str],
                     args: argparse.Namespace, targets: list[float], methods: list[str],
                     dev: torch.device) -> list[dict[str, Any]]:
    """The latency search per target, its pick re-measured, trained on; and from scratch."""
    d_ep, f_ep = args.dense_epochs, args.budget_epochs
    per_epoch = min(len(bench.data.train_x), args.max_train_images or len(bench.data.train_x))
    ranking = min(RANKING_IMAGES, per_epoch)
    images = (f_ep * per_epoch - ranking) // f_ep
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            overrides = base + [f"search.budget={args.search_budget}", "supernet.epochs=1",
                                f"supernet.max_train_images={ranking}", "finetune.init=dense",
                                f"supernet.sample={args.supernet_sample}",
                                f"finetune.epochs={f_ep}", "search.objective=latency",
                                f"search.max_latency={target}",
                                f"search.latency_batch={args.batch}",
                                f"search.latency_runtime={args.runtime}"]
            found = searched(overrides, Path(tmp), f"latency-{target}", dev)
            cfg = load_config(None, overrides)
            source = found.prep.finetune_source(cfg)
            slicer = found.prep.space.slicer(source)
            table = found.prep.latency  # ratios: free of the re-anchoring's scale
            # every candidate fits the limit as the run corrected it near T
            near = sorted(found.results, key=lambda r: r.val_score,
                          reverse=True)[:PICK_CANDIDATES]
            measured = [(r, clock.ratio(slicer.build(r.arch), r.arch)) for r in near]
            fits = [(r, m) for r, m in measured if m <= target]
            if not fits:
                print(f"prunesearch {target}: none of {len(near)} measured under it",
                      flush=True)
                continue
            picks = fits[:GRID_CANDIDATES]  # as many trained networks as uniform-compound's
            side = [{"predicted": table.ratio(r.arch), "measured": m,
                     "val_score": r.val_score} for r, m in measured]
            variant = "" if args.supernet_sample == "uniform" else f" {args.supernet_sample}"
            made = {"prunesearch": (found.supernet_s + found.search_s,
                                    f"supernet ranking + ft {f_ep} (continuing)"),
                    "prunesearch-arch-scratch": (0.0, f"scratch {d_ep + f_ep}")}
            for method, (make_s, epochs) in made.items():
                if method not in methods:
                    continue
                trained = []
                for r, ratio in picks:
                    train = (runs.finetune({"arch": r.arch.to_dict()}, source, f_ep, cfg, images)
                             if method == "prunesearch" else runs.scratch(r.arch, d_ep + f_ep))
                    row = bench.record(method + variant, target, slicer.build(r.arch), make_s,
                                       epochs, train)
                    trained.append({**row, "latency_ratio": ratio, "arch": r.arch.to_dict()})
                best = max(trained, key=lambda t: statistics.mean(t["val_acc"]))
                extra = ({"predicted_vs_measured": side, "limit": found.summary["latency_limit"]}
                         if method == "prunesearch" else {})
                rows.append({**best, **extra, "candidates": [
                    {k: t[k] for k in ("arch", "latency_ratio", "val_acc", "test_acc")}
                    for t in trained]})
    return rows


def merge(model: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The stored results with these rows in place of any of the same method, runtime, batch
    and target."""
    path = RESULTS / f"latency_peers_{model}.json"
    stored = json.loads(path.read_text()) if path.exists() else {"rows": []}

    def key(r: dict[str, Any]) -> tuple:
        return r["method"], r["runtime"], r["batch"], r["target"]

    new = {key(r) for r in rows}
    kept = [r for r in stored["rows"] if key(r) not in new]
    return {**meta, "rows": kept + rows}


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    variant = row["method"].partition(" ")[2]  # the best variant's name, e.g. near-limit
    return (f"{mean_std(row['test_acc'])} ({row['latency_ratio']:.2f}, "
            f"{row['macs_ratio']:.2f} MACs{', ' + variant if variant else ''})")


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Per model, runtime, batch and target: each method's row (mean test accuracy)."""
    lines = ["| model | runtime | batch | target | uniform-compound | tp-l1-local | prunesearch | "
             "prunesearch arch, scratch | best prunesearch - uniform |",
             "|---|---|---:|---:|---|---|---|---|---:|"]
    for model, stored in sorted(results.items()):
        cells = sorted({(r["runtime"], r["batch"], r["target"]) for r in stored["rows"]},
                       key=lambda c: (c[0], c[1], -c[2]))
        for runtime, batch, target in cells:
            here = [r for r in stored["rows"]
                    if (r["runtime"], r["batch"], r["target"]) == (runtime, batch, target)]
            at = {m: max((r for r in here if r["method"].split(" ")[0] == m),
                         key=lambda r: statistics.mean(r["val_acc"]), default=None)
                  for m in METHODS}
            ours = [at[m] for m in ("prunesearch", "prunesearch-arch-scratch") if at[m]]
            lead = ""
            if ours and at["uniform-compound"]:
                best = max(statistics.mean(r["test_acc"]) for r in ours)
                lead = f"{100 * (best - statistics.mean(at['uniform-compound']['test_acc'])):+.2f}"
            shown = " | ".join(_cell(at.get(m)) for m in METHODS)
            lines.append(f"| {model} | {runtime} | {batch} | {target} | {shown} | {lead} |")
    lines.append("\nTest accuracy % (mean +- std over seeds; measured latency ratio to dense, "
                 "MACs ratio; the variant, where the prunesearch row best on validation is "
                 "one); '-': no row "
                 "(not run, or no network under T). Every choice on validation; test read "
                 "once per network.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/latency_peers.py "
                                            "--model resnet20 --runtime torch --batch 1")
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "mobilenetv2_small"])
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--batch", type=int, default=1)
    add_job_arguments(parser)
    parser.add_argument("--budget-epochs", type=int, default=6)
    parser.add_argument("--targets", default="0.6,0.4,0.25")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--supernet-sample", default="uniform", choices=["uniform", "near-limit"],
                        help="the ranking supernet's draws (supernet.sample); other than "
                        "uniform, the prunesearch rows' methods are named with it")
    args = parser.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown --methods {sorted(unknown)}; choose from {METHODS}")
    targets = [float(t) for t in args.targets.split(",")]
    d_ep, f_ep = args.dense_epochs, args.budget_epochs
    dev = resolve_device(args.device)
    start = time.perf_counter()
    base = training_overrides(args.model, d_ep, args.max_train_images) + [
        f"model.train.schedule_epochs={d_ep + f_ep}"]
    cfg = load_config(None, base + [f"finetune.epochs={f_ep}"])
    prep = prepare(cfg, dev, progress=False)
    bench = Bench(args, cfg, prep)
    runs = Trainings(bench, TrainedCache(RESULTS / f"latency_trained_{args.model}.json"),
                     args.model, cfg)
    clock = Clock(prep.model, prep.data.input_shape, args.batch, args.runtime)
    dense_macs, dense_params = count(prep.model, prep.data.input_shape)
    rows: list[dict[str, Any]] = []

    def persist(new: list[dict[str, Any]]) -> None:
        """Add a method's rows to the stored results and the published table."""
        for row in new:
            row.update(runtime=args.runtime, batch=args.batch,
                       epochs=row.pop("epochs"), wall_s=row.get("make_s", 0.0) + row["train_s"])
        rows.extend(new)
        meta = {"command": command_line(), "machine": machine(), "dense": {
            "test_acc": prep.dense_meta.get("test_score"), "macs": dense_macs,
            "params": dense_params, "epochs": d_ep, "schedule_epochs": d_ep + f_ep},
            "seeds": args.seed_list, "total_s": time.perf_counter() - start}
        save_results(f"latency_peers_{args.model}", merge(args.model, rows, meta))
        stored = {p.stem.removeprefix("latency_peers_"): json.loads(p.read_text())
                  for p in sorted(RESULTS.glob("latency_peers_*.json"))}
        publish("latency_peers", table(stored))

    if "uniform-compound" in methods:
        persist(uniform_rows(bench, runs, clock, prep, targets, d_ep + f_ep))
    if "tp-l1-local" in methods:
        persist(tp_rows(bench, runs, clock, prep, cfg, targets, f_ep))
    if {"prunesearch", "prunesearch-arch-scratch"} & set(methods):
        persist(prunesearch_rows(bench, runs, clock, base, args, targets, methods, dev))

if __name__ == "__main__":
    main()
