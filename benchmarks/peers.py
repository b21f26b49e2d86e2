"""prunesearch against what a user would pick instead, at about 50% and 25% of dense MACs.

One model per command, on Fashion-MNIST with the default job's data split and dense model
(3 epochs, the checkpoint cache), four ways to a smaller network per MACs target:

- tp-l1: Torch-Pruning's MetaPruner, global channel pruning by group L1 magnitude
  (GroupMagnitudeImportance p=1), stepped (400 steps to ratio 1.0, Torch-Pruning's own
  benchmark schedule) until the MACs are at or under the target; classifier kept whole;
- tp-taylor: the same with group Taylor importance, gradients of the cross-entropy on 256
  random training images before every step;
- uniform-scratch: the zoo model at the width multiplier whose MACs are nearest the target,
  trained from scratch with labels only for the dense epochs + the fine-tuning epochs (the
  total the others spent);
- prunesearch: the `--strategy` search (default TAS, one search per target) on the dense
  model, its point nearest each target built from the dense weights.

Every pruned network (tp-l1, tp-taylor, prunesearch) is fine-tuned by the same call: the dense
recipe for `--ft-epochs` epochs with distillation from the dense model (the default job's
temperature and alpha). Seeds (`--seeds`) vary the fine-tuning (and uniform-scratch's init and
training); pruning and search run once. MACs and params are counted by Torch-Pruning's
counter on the final models; latency is the median eval-mode forward on this CPU at batch 1
and 64, as a ratio to the dense model; test accuracy is on the 10000 test images, never used
for any choice.

    python benchmarks/peers.py --model resnet20 --search-images 27500
    python benchmarks/peers.py --model mobilenetv2_small --seeds 0 --search-images 20000

are the committed runs, each under 45 minutes on 2 CPU cores (TAS on the whole training split
made the resnet20 run take 53 minutes; a second seed adds about 10 to the mobilenetv2_small one).

Each writes benchmarks/results/peers_<model>.json (rewritten after every trained network) and
its tables in benchmarks/README.md and README.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import search  # noqa: E402
from _machine import (  # noqa: E402
    PROJECT_README,
    command_line,
    machine,
    save_results,
    write_section,
)

from prunesearch.config import load_config  # noqa: E402
from prunesearch.data import DatasetSplits  # noqa: E402
from prunesearch.models import Distillation, build_model, train_model  # noqa: E402
from prunesearch.pipeline import Prepared, prepare  # noqa: E402
from prunesearch.runs.latency import measure_latency_ms  # noqa: E402
from prunesearch.spaces import Arch  # noqa: E402

TARGETS = (0.5, 0.25)
TP_STEPS = 400
TAYLOR_IMAGES = 256
WIDTH_MULTS = [m / 100 for m in range(10, 101)]


def count(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, params) by Torch-Pruning's counter: one neutral ruler for every method."""
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *shape))
    return int(macs), int(params)


def classifier(model: nn.Module, classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes]


def tp_prune(dense: nn.Module, data: DatasetSplits, target: float, taylor: bool,
             seed: int) -> nn.Module:
    """A copy of `dense` channel-pruned by Torch-Pruning until its MACs <= target x dense."""
    model = copy.deepcopy(dense).eval()
    example = data.train_x[:1]
    importance = (tp.importance.GroupTaylorImportance() if taylor
                  else tp.importance.GroupMagnitudeImportance(p=1))
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, global_pruning=True,
                                  pruning_ratio=1.0, iterative_steps=TP_STEPS,
                                  ignored_layers=classifier(model, data.num_classes))
    limit = target * count(model, data.input_shape)[0]
    gen = torch.Generator().manual_seed(seed)
    while count(model, data.input_shape)[0] > limit and pruner.current_step < TP_STEPS:
        if taylor:
            idx = torch.randint(len(data.train_x), (TAYLOR_IMAGES,), generator=gen)
            model.zero_grad()
            F.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def uniform_width(name: str, data: DatasetSplits, target: float, dense_macs: int) -> float:
    """The zoo width multiplier whose model's MACs are nearest target x dense."""
    def gap(mult: float) -> float:
        model = build_model(name, data.input_shape, data.num_classes, mult)
        return abs(count(model, data.input_shape)[0] / dense_macs - target)
    return min(WIDTH_MULTS, key=gap)


def prunesearch_archs(cfg_base: list[str], strategy: str, out: Path, epochs: int,
                      images: int | None) -> tuple[dict[float, Arch], float]:
    """The search's point nearest each target (its arch) and the search's wall seconds."""
    prefix = [f"search.{strategy}.max_train_images={images}"] if images else []
    run_dir, cands, wall = search(None, cfg_base, out, f"peers-{strategy}",
                                  f"search.strategy={strategy}",
                                  f"search.{strategy}.targets={list(TARGETS)}",
                                  f"search.{strategy}.epochs={epochs}", *prefix)
    dense = json.loads((run_dir / "summary.json").read_text())["dense"]["macs"]
    ok = [c for c in cands if c.result.ok]
    picks = {t: min(ok, key=lambda c, t=t: abs(c.result.macs / dense - t)).result.arch
             for t in TARGETS}
    return picks, wall


def measure_latency(dense: nn.Module, models: list[nn.Module], rows: list[dict[str, Any]],
                    dense_row: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Median CPU latency at batch 1 and 64 of the dense model and each row's network (ratios),
    all measured together after training so every figure sees the same quiet, warm machine."""
    def ms(model: nn.Module) -> dict[int, float]:
        return {b: measure_latency_ms(model, shape, b, repeats=200 if b == 1 else 50,
                                      warmup=20) for b in (1, 64)}
    ms(dense)  # warm the thread pool and allocator
    dense_row["latency_ms"] = base = ms(dense)
    for row, model in zip(rows, models, strict=True):
        row["latency_ratio"] = {b: t / base[b] for b, t in ms(model).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20",
                        choices=["resnet20", "mobilenetv2_small"])
    parser.add_argument("--ft-epochs", type=int, default=1)
    parser.add_argument("--seeds", default="0,1", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--strategy", default="tas", choices=["tas"])
    parser.add_argument("--search-epochs", type=int, default=3,
                        help="epochs of the differentiable search per target")
    parser.add_argument("--search-images", type=int, default=None,
                        help="the search trains on a prefix of the training split")
    parser.add_argument("--max-train-images", type=int, default=None,
                        help="train everything on a prefix (a quick check of the script only)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    base = [f"model.name={args.model}"]
    if args.max_train_images:
        base.append(f"model.train.max_train_images={args.max_train_images}")
        args.search_images = min(args.search_images or args.max_train_images,
                                 args.max_train_images)
    cfg = load_config(None, base)
    prep: Prepared = prepare(cfg, torch.device("cpu"), progress=False)
    data, teacher, shape = prep.data, prep.model, prep.data.input_shape
    dense_macs, dense_params = count(teacher, shape)
    ft_recipe = cfg.model.train.model_copy(update={"epochs": args.ft_epochs})
    scratch_recipe = cfg.model.train.model_copy(
        update={"epochs": cfg.model.train.epochs + args.ft_epochs})
    distill = Distillation(teacher, cfg.finetune.temperature, cfg.finetune.alpha)
    dense_row = {"test_acc": prep.dense_meta.get("test_acc"), "macs": dense_macs,
                 "params": dense_params,
                 "epochs": cfg.model.train.epochs}
    rows: list[dict[str, Any]] = []
    finals: list[nn.Module] = []  # one trained network per row, timed once training is over
    command = command_line()

    def record(method: str, target: float, model: nn.Module, make_s: float,
               train: Callable[[nn.Module, int], Any]) -> None:
        """Train copies of `model` once per seed, test each; one row per method and target."""
        macs, params = count(model, shape)
        accs, secs = [], []
        for seed in seeds:
            net = copy.deepcopy(model)
            report = train(net, seed)
            accs.append(report.test_acc)
            secs.append(report.seconds)
            print(f"{method} {target} seed {seed}: {100 * report.test_acc:.2f}% "
                  f"({report.seconds:.0f} s)", flush=True)
        rows.append({"method": method, "target": target, "macs_ratio": macs / dense_macs,
                     "params": params, "test_acc": accs, "make_s": make_s,
                     "train_s": statistics.mean(secs)})
        finals.append(net)
        save()

    def save() -> None:
        save_results(f"peers_{args.model}",
                     {"command": command, "machine": machine(), "dense": dense_row, "rows": rows})

    def finetune(net: nn.Module, seed: int) -> Any:
        return train_model(net, data, ft_recipe, seed=seed, device=torch.device("cpu"),
                           progress=False, distill=distill)

    def from_scratch(mult: float) -> Callable[[nn.Module, int], Any]:
        def train(_: nn.Module, seed: int) -> Any:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = build_model(args.model, shape, data.num_classes, mult)
            return train_model(net, data, scratch_recipe, seed=seed,
                               device=torch.device("cpu"), progress=False)
        return train

    for target in TARGETS:
        for method, taylor in (("tp-l1", False), ("tp-taylor", True)):
            t = time.perf_counter()
            pruned = tp_prune(teacher, data, target, taylor, seed=0)
            record(method, target, pruned, time.perf_counter() - t, finetune)
        mult = uniform_width(args.model, data, target, dense_macs)
        slim = build_model(args.model, shape, data.num_classes, mult)
        record("uniform-scratch", target, slim, 0.0, from_scratch(mult))
    with tempfile.TemporaryDirectory() as tmp:
        archs, search_s = prunesearch_archs(base, args.strategy, Path(tmp), args.search_epochs,
                                            args.search_images)
    slicer = prep.space.slicer(teacher)
    for target in TARGETS:
        record(f"prunesearch ({args.strategy})", target, slicer.build(archs[target]),
               search_s / len(TARGETS), finetune)
    measure_latency(teacher, finals, rows, dense_row, shape)
    save()
    write_tables(args, command, dense_row, rows, seeds, time.perf_counter() - start)


def write_tables(args: argparse.Namespace, command: str, dense: dict[str, Any],
                 rows: list[dict[str, Any]], seeds: list[int], total_s: float) -> None:
    m = machine()
    lines = [f"**{args.model}** (dense: {100 * dense['test_acc']:.2f}% test, "
             f"{dense['macs'] / 1e6:.2f} M MACs, {dense['params'] / 1e3:.1f} k params, "
             f"{dense['latency_ms'][1]:.2f} / {dense['latency_ms'][64]:.1f} ms at batch 1 / 64)",
             "", "| target | method | test acc (mean +- std over seeds) | MACs ratio | params | "
             "latency ratio b1 / b64 | prune or search s | train s per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["target"]):
        acc = [100 * a for a in r["test_acc"]]
        best = max((x for x in rows if x["target"] == r["target"]),
                   key=lambda x: statistics.mean(x["test_acc"]))
        mean = f"{statistics.mean(acc):.2f}"
        if len(acc) > 1:
            mean += f" +- {statistics.stdev(acc):.2f}"
        lines.append(f"| {r['target']} | {r['method']} | "
                     f"{f'**{mean}**' if r is best else mean} | {r['macs_ratio']:.3f} | "
                     f"{r['params']} | {r['latency_ratio'][1]:.2f} / "
                     f"{r['latency_ratio'][64]:.2f} | {r['make_s']:.0f} | "
                     f"{r['train_s']:.0f} |")
    lines.append(
        f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
        f"{total_s / 60:.0f} min in all. Fine-tuning {args.ft_epochs} epoch(s) with "
        f"distillation for every pruned network, uniform-scratch "
        f"{dense['epochs'] + args.ft_epochs} epochs; seeds {seeds}; {args.strategy} "
        f"{args.search_epochs} epochs per target"
        f"{f' on {args.search_images} training images' if args.search_images else ''} (its "
        f"search time is split over the targets).")
    table = "\n".join(lines) + "\n"
    write_section(f"peers_{args.model}", table)
    write_section(f"peers_{args.model}", table, PROJECT_README)
    print(table)


if __name__ == "__main__":
    main()
