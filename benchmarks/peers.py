"""prunesearch against what a user would pick instead, at an equal training budget.

One model and one budget per command, on Fashion-MNIST with the default job's data split. The
dense model trains `--dense-epochs` D epochs (the checkpoint cache). Every method then gets
`--budget-epochs` F more epochs of training in all; per MACs target (`--targets`):

- uniform-scratch: the zoo model at the width multiplier whose MACs are nearest the target,
  trained from scratch with labels only for D + F epochs (it never needed the dense model);
- tp-l1, tp-taylor: Torch-Pruning's MetaPruner with global pruning (group L1 magnitude, group
  Taylor on 256 random training images per step), stepped (400 steps to ratio 1.0) until the
  MACs are at or under the target, classifier kept whole; tp-l1-local: the same with
  Torch-Pruning's default local pruning (every layer cut by the same ratio); each then
  fine-tuned F epochs;
- prunesearch: the default job's search (TPE over the weight-sharing proxy) on the dense
  weights, its best proxy point at or under the target fine-tuned F epochs from the sliced
  weights; `prunesearch +supernet` first trains the dense model S = `--supernet-epochs` of the
  F epochs as a supernet (sandwich rule) and fine-tunes the rest, F - S;
- prunesearch-arch-scratch: the architecture `prunesearch +supernet` found, trained from
  scratch like uniform-scratch (D + F epochs, labels only): is the searched shape better than
  the uniform one when both are trained the same way ("Rethinking the Value of Network
  Pruning")?
- prunesearch one-schedule: the product with `model.train.schedule_epochs = D + F`: its own
  dense model trains D epochs of a (D + F)-epoch cosine schedule and stops half-way down it
  (another dense checkpoint, trained D epochs like the shared one), the search runs on it, and
  the best proxy point under each target trains the F epochs left, continuing the schedule
  instead of restarting at the peak lr; tp-l1-local one-schedule: Torch-Pruning's local L1
  pruning of that same dense model, trained the same F continued epochs (how much of the
  difference is the schedule and how much the search);
- prunesearch one-schedule ranked: the same dense model, then per target a supernet stage on
  12000 training images that only RANKS candidates (`finetune.init = "dense"`), an emo search
  held to [0.9 x target, target] of dense MACs, and its best proxy point cut from the dense
  model's own weights, trained the F epochs left of the schedule on fewer images per epoch so
  that supernet and fine-tuning images together make F epochs.

Fine-tuning (every pruned network the same call) is the product's default fine-tuning for the
epochs left (finetune.kd, its temperature and alpha, finetune.lr; distillation from the network
cut from when kd is on), on all training images. Seeds
(`--seeds`) vary the fine-tuning (and the from-scratch networks' init and training); dense
training, pruning and search run once. MACs and params are counted by Torch-Pruning's counter
on the final models; test accuracy is on the 10000 test images, never used for any choice. A
second table puts each prunesearch row beside uniform-scratch trained for the same WALL time as
the whole prunesearch pipeline (dense training, supernet, search and fine-tuning);
`--equal-wall-only` trains just that table, against a stored budget's best prunesearch row at
each target. Latency
(median eval forward at batch 1 and 64, on the benchmark's device) is a ratio to the dense
model.

    python benchmarks/peers.py --model resnet20 --dense-epochs 3 --budget-epochs 3

Each run adds its budget's rows to benchmarks/results/peers_<model>.json (a method and target
run again replaces its old row; the others are kept) and rewrites the model's tables and the
best-row summary in benchmarks/README.md. Runs side by side (one per target, say, on a GPU) write
`--part FILE` each; `--merge FILE...` then joins them.
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
from _finetuned import (  # noqa: E402
    add_job_arguments,
    full_finetune_recipe,
    searched,
    training_overrides,
)
from _machine import (  # noqa: E402
    RESULTS,
    command_line,
    device_label,
    machine,
    mean_std,
    publish,
    save_results,
)

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.finetune import finetune_span  # noqa: E402
from prunesearch.app.prepare import Prepared, prepare, resolve_device  # noqa: E402
from prunesearch.config import RunConfig  # noqa: E402
from prunesearch.data import DatasetSplits  # noqa: E402
from prunesearch.latency.measure import measure_latency_ms  # noqa: E402
from prunesearch.models import build_model  # noqa: E402
from prunesearch.training import Distillation, train_model  # noqa: E402
from prunesearch.training.finetune import reinitialise  # noqa: E402

RANKED = "prunesearch one-schedule ranked"
METHODS = ["tp-l1", "tp-taylor", "tp-l1-local", "uniform-scratch", "prunesearch",
           "prunesearch +supernet", "prunesearch-arch-scratch", "prunesearch one-schedule",
           "tp-l1-local one-schedule", RANKED]
ONE_SCHEDULE = " one-schedule"
RANKING_IMAGES = 12_000  # the ranking supernet's images: the default job's supernet stage
BAND = 0.9  # the ranked search keeps candidates in [BAND x target, target] of dense MACs
TP_STEPS = 400
TAYLOR_IMAGES = 256
WIDTH_MULTS = [m / 100 for m in range(5, 101)]


def count(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, params) by Torch-Pruning's counter: one neutral ruler for every method."""
    device = next(model.parameters()).device
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *shape, device=device))
    return int(macs), int(params)


def classifier(model: nn.Module, classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes]


def tp_prune(dense: nn.Module, data: DatasetSplits, target: float, taylor: bool,
             global_pruning: bool, seed: int) -> nn.Module:
    """A copy of `dense` channel-pruned by Torch-Pruning until its MACs <= target x dense."""
    model = copy.deepcopy(dense).eval()
    example = data.train_x[:1]
    importance = (tp.importance.GroupTaylorImportance() if taylor
                  else tp.importance.GroupMagnitudeImportance(p=1))
    pruner = tp.pruner.MetaPruner(model, example, importance=importance,
                                  global_pruning=global_pruning, pruning_ratio=1.0,
                                  iterative_steps=TP_STEPS,
                                  ignored_layers=classifier(model, data.num_classes))
    limit = target * count(model, data.input_shape)[0]
    gen = torch.Generator().manual_seed(seed)
    while count(model, data.input_shape)[0] > limit and pruner.current_step < TP_STEPS:
        if taylor:
            idx = torch.randint(len(data.train_x), (TAYLOR_IMAGES,), generator=gen)
            model.zero_grad()
            idx = idx.to(data.train_x.device)
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


def latency_ratios(dense: nn.Module, models: list[nn.Module], shape: tuple[int, ...]
                   ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Median latency at batch 1 and 64 of the dense model and ratios of the others (keyed by
    batch size), all measured together after training so every figure sees the same quiet,
    warm device."""
    def ms(model: nn.Module) -> dict[str, float]:
        return {str(b): measure_latency_ms(model, shape, b, repeats=200 if b == 1 else 50,
                                           warmup=20) for b in (1, 64)}
    ms(dense)  # warm the thread pool and allocator
    base = ms(dense)
    return base, [{b: t / base[b] for b, t in ms(m).items()} for m in models]


class Bench:
    """The rows of one budget: each method's networks trained per seed and tested."""

    def __init__(self, args: argparse.Namespace, cfg: RunConfig, prep: Prepared) -> None:
        self.args, self.cfg = args, cfg
        self.shape, self.data = prep.data.input_shape, prep.data
        self.dev = prep.data.train_x.device
        self.dense_macs, self.dense_params = count(prep.model, self.shape)
        self.rows: list[dict[str, Any]] = []
        self.finals: list[nn.Module] = []

    def record(self, method: str, target: float, model: nn.Module, make_s: float,
               epochs: str, train: Callable[[nn.Module, int], Any]) -> dict[str, Any]:
        """Train copies of `model` once per seed, test each; one row per method and target."""
        macs, params = count(model, self.shape)
        accs, vals, secs = [], [], []
        for seed in self.args.seed_list:
            net = copy.deepcopy(model)
            report = train(net, seed)
            accs.append(report.test_score)
            vals.append(report.val_score)
            secs.append(report.seconds)
            print(f"{method} {target} seed {seed}: {100 * report.test_score:.2f}% "
                  f"({report.seconds:.0f} s)", flush=True)
        row = {"method": method, "target": target, "macs_ratio": macs / self.dense_macs,
               "params": params, "test_acc": accs, "val_acc": vals, "epochs": epochs,
               "make_s": make_s,
               "train_s": statistics.mean(secs)}
        self.rows.append(row)
        self.finals.append(net)
        return row

    def finetune(self, teacher: nn.Module, epochs: int, cfg: RunConfig | None = None,
                 images: int | None = None) -> Callable[[nn.Module, int], Any]:
        """The product's fine-tuning for `epochs`, as the benchmark's config (or `cfg`, e.g.
        one whose fine-tuning continues a longer schedule) makes it; on the first `images`
        training images per epoch when given (all by default)."""
        cfg = cfg or self.cfg
        recipe, span = full_finetune_recipe(cfg, epochs), finetune_span(cfg)
        if images is not None:
            recipe = recipe.model_copy(update={"max_train_images": images})
        distill = (Distillation(teacher, cfg.finetune.temperature, cfg.finetune.alpha)
                   if cfg.finetune.kd else None)

        def train(net: nn.Module, seed: int) -> Any:
            return train_model(net, self.data, recipe, seed=seed, device=self.dev,
                               progress=False, distill=distill, span=span)
        return train

    def scratch(self, epochs: int) -> Callable[[nn.Module, int], Any]:
        """Train the architecture of the given network from a fresh, seeded init."""
        recipe = self.cfg.model.train.model_copy(update={"epochs": epochs})

        def train(model: nn.Module, seed: int) -> Any:
            net = reinitialise(model, seed)
            return train_model(net, self.data, recipe, seed=seed, device=self.dev,
                               progress=False)
        return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/peers.py --model "
                                            "resnet20 --dense-epochs 3 --budget-epochs 3")
    parser.add_argument("--model", default="resnet20",
                        choices=["resnet20", "mobilenetv2_small"])
    add_job_arguments(parser)
    parser.add_argument("--budget-epochs", type=int, default=3)
    parser.add_argument("--supernet-epochs", type=int, default=1,
                        help="of the budget, spent on supernet training (rest: fine-tuning)")
    parser.add_argument("--targets", default="0.5,0.25,0.1")
    parser.add_argument("--seeds", default="0,1", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--ranked-widths", help="the ranked rows' space.width_ratios, comma-"
                        "separated (default: the default job's); named in the rows' method")
    parser.add_argument("--no-equal-wall", action="store_true",
                        help="skip the equal-wall-time rows (the longest trainings)")
    parser.add_argument("--equal-wall-only", action="store_true",
                        help="train only the equal-wall-time rows, against the stored "
                        "budget's best prunesearch row at each target")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of the rows (a part of a split run)")
    parser.add_argument("--part", help="write this run to FILE instead (runs side by side)")
    parser.add_argument("--merge", nargs="+", metavar="FILE",
                        help="join --part files into results and tables, train nothing")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        merge(args.model, [p for p in parts if p["model"] == args.model])
        return
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown --methods {sorted(unknown)}; choose from {METHODS}")
    if "prunesearch-arch-scratch" in methods and "prunesearch +supernet" not in methods:
        parser.error("prunesearch-arch-scratch trains the architecture prunesearch +supernet "
                     "finds: name both")
    targets = [float(t) for t in args.targets.split(",")]
    d_ep, f_ep, s_ep = args.dense_epochs, args.budget_epochs, args.supernet_epochs
    if not 0 < s_ep < f_ep:
        parser.error("--supernet-epochs must be at least 1 and leave fine-tuning epochs")
    label, stored, pipelines = f"D{d_ep}F{f_ep}", None, []
    if args.equal_wall_only:
        try:
            stored = stored_budget(args.model, label)
            pipelines = [best_pipeline_row(stored["rows"], t) for t in targets]
        except LookupError as err:
            parser.error(str(err))
    dev = resolve_device(args.device)
    start = time.perf_counter()
    base = training_overrides(args.model, d_ep, args.max_train_images)
    cfg = load_config(None, base)
    t = time.perf_counter()
    prep = prepare(cfg, dev, progress=False)
    dense_s = prep.dense_meta.get("seconds") or (time.perf_counter() - t)
    bench = Bench(args, cfg, prep)
    # per target; recording re-initialises copies
    uniform_nets = {t: build_model(args.model, bench.shape, prep.data.num_classes,
                                   uniform_width(args.model, prep.data, t, bench.dense_macs)
                                   ).to(dev) for t in targets}
    if stored:
        dense_s, rows = stored["dense"]["train_s"], stored["rows"]
    else:
        method_rows(bench, prep, methods, targets, uniform_nets, base, dev)
        rows, pipelines = bench.rows, [r for r in bench.rows if is_pipeline(r)]
    if args.equal_wall_only or not args.no_equal_wall:
        equal_wall_rows(bench, pipelines, rows, uniform_nets, dense_s, d_ep + f_ep)
    dense_lat, ratios = latency_ratios(prep.model, bench.finals, bench.shape)
    for row, ratio in zip(bench.rows, ratios, strict=True):
        row["latency_ratio"] = ratio
    dense_row = {"test_acc": prep.dense_meta.get("test_score"), "macs": bench.dense_macs,
                 "params": bench.dense_params, "epochs": d_ep, "latency_ms": dense_lat,
                 "train_s": dense_s}
    run = {"command": command_line(), "machine": machine(), "dense": dense_row,
           "dense_epochs": d_ep, "budget_epochs": f_ep, "supernet_epochs": s_ep,
           "seeds": args.seed_list, "device": str(dev), "rows": bench.rows,
           "finetune_loss": ("with distillation from the network cut from (alpha "
                             f"{cfg.finetune.alpha}, T {cfg.finetune.temperature})"
                             if cfg.finetune.kd else "on labels only"),
           "total_s": time.perf_counter() - start}
    if args.part:  # one of several processes run side by side: `--merge` joins them
        Path(args.part).write_text(json.dumps({"model": args.model, "label": label,
                                               "run": run}, indent=1) + "\n")
    else:
        merge(args.model, [{"label": label, "run": run}])


def method_rows(bench: Bench, prep: Prepared, methods: list[str], targets: list[float],
                uniform_nets: dict[float, nn.Module], base: list[str],
                dev: torch.device) -> None:
    """Train and test every method's networks at every target (the budget's main table)."""
    args, teacher = bench.args, prep.model
    d_ep, f_ep, s_ep = args.dense_epochs, args.budget_epochs, args.supernet_epochs
    for target in targets:
        for method, taylor, glob in (("tp-l1", False, True), ("tp-taylor", True, True),
                                     ("tp-l1-local", False, False)):
            if method not in methods:
                continue
            t = time.perf_counter()
            pruned = tp_prune(teacher, prep.data, target, taylor, glob, seed=0)
            bench.record(method, target, pruned, time.perf_counter() - t, f"ft {f_ep}",
                         bench.finetune(teacher, f_ep))
        if "uniform-scratch" in methods:
            bench.record("uniform-scratch", target, uniform_nets[target], 0.0,
                         f"scratch {d_ep + f_ep}", bench.scratch(d_ep + f_ep))

    variants = [(m, e) for m, e in (("prunesearch", 0), ("prunesearch +supernet", s_ep))
                if m in methods]
    with tempfile.TemporaryDirectory() as tmp:
        for method, supernet_epochs in variants:
            found = searched(base + [f"search.budget={args.search_budget}",
                                     f"supernet.epochs={supernet_epochs}"],
                             Path(tmp), method.replace(" +", "-"), dev)
            slicer = found.prep.space.slicer(found.prep.model)
            ft_epochs = f_ep - supernet_epochs
            picks = {target: found.best_under(target) for target in targets}
            for target, arch in picks.items():
                row = bench.record(method, target, slicer.build(arch),
                                   found.supernet_s + found.search_s,
                                   f"supernet {supernet_epochs} + ft {ft_epochs}"
                                   if supernet_epochs else f"ft {ft_epochs}",
                                   bench.finetune(found.prep.model, ft_epochs))
                row["arch"] = arch.to_dict()
            if supernet_epochs and "prunesearch-arch-scratch" in methods:
                for target, arch in picks.items():
                    bench.record("prunesearch-arch-scratch", target, slicer.build(arch), 0.0,
                                 f"scratch {d_ep + f_ep}", bench.scratch(d_ep + f_ep))

    one_schedule = [m for m in methods if m.endswith(ONE_SCHEDULE)]
    if RANKED in methods:
        ranked_rows(bench, base, args, targets, dev)
    if one_schedule:
        with tempfile.TemporaryDirectory() as tmp:
            one = base + [f"search.budget={args.search_budget}", "supernet.epochs=0",
                          f"model.train.schedule_epochs={d_ep + f_ep}"]
            found = searched(one, Path(tmp), "one-schedule", dev)
            one_cfg = load_config(None, one + [f"finetune.epochs={f_ep}"])
            cont = f"ft {f_ep} (continuing a {d_ep + f_ep}-epoch schedule)"
            slicer = found.prep.space.slicer(found.prep.model)
            for target in targets:
                if "tp-l1-local one-schedule" in methods:
                    t = time.perf_counter()
                    pruned = tp_prune(found.prep.model, prep.data, target, False, False, seed=0)
                    bench.record("tp-l1-local one-schedule", target, pruned,
                                 time.perf_counter() - t, cont,
                                 bench.finetune(found.prep.model, f_ep, one_cfg))
                if "prunesearch one-schedule" in methods:
                    arch = found.best_under(target)
                    row = bench.record("prunesearch one-schedule", target, slicer.build(arch),
                                       found.search_s, cont,
                                       bench.finetune(found.prep.model, f_ep, one_cfg))
                    row["arch"] = arch.to_dict()
                    row["dense_test_acc"] = found.prep.dense_meta.get("test_score")


def is_pipeline(row: dict[str, Any]) -> bool:
    """A prunesearch row whose time is a whole pipeline: dense model, then its making
    (supernet, search) and training. prunesearch-arch-scratch trains a found shape from
    scratch instead, so it has no such wall time."""
    return row["method"].startswith("prunesearch") and row["method"] != "prunesearch-arch-scratch"


def best_pipeline_row(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The stored prunesearch pipeline row with the best mean test accuracy at `target`;
    LookupError when it or the uniform-scratch row to time against is missing."""
    at = [r for r in rows if r["target"] == target and is_pipeline(r)]
    if not at or not any(r["method"] == "uniform-scratch" for r in rows
                         if r["target"] == target):
        raise LookupError(f"the stored budget has no prunesearch row or no uniform-scratch "
                          f"row at target {target}: run the budget's methods there first")
    return max(at, key=mean_acc)


def stored_budget(model: str, label: str) -> dict[str, Any]:
    """The budget's run as results/peers_<model>.json holds it (for --equal-wall-only);
    LookupError when there is none."""
    path = RESULTS / f"peers_{model}.json"
    budgets = json.loads(path.read_text()).get("budgets", {}) if path.exists() else {}
    if label not in budgets:
        raise LookupError(f"{path} holds no {label} budget: run that budget before "
                          "--equal-wall-only")
    return budgets[label]


def equal_wall_rows(bench: Bench, pipelines: list[dict[str, Any]], rows: list[dict[str, Any]],
                    uniform_nets: dict[float, nn.Module], dense_s: float,
                    scratch_epochs: int) -> None:
    """Per prunesearch pipeline row, uniform-scratch trained as many epochs as fit in that
    pipeline's whole wall time: the benchmark's dense training (the one-schedule dense
    models train the same network as long) plus the row's making and its mean training time;
    an epoch's cost is the uniform-scratch row's at that target. Targets without a
    uniform-scratch row (a part run without it) get none."""
    uniform = {r["target"]: r for r in rows if r["method"] == "uniform-scratch"}
    for row in pipelines:
        target = row["target"]
        if target not in uniform:
            continue
        wall = dense_s + row["make_s"] + row["train_s"]
        epochs = max(1, round(wall / (uniform[target]["train_s"] / scratch_epochs)))
        new = bench.record(f"uniform-scratch (= {row['method']} wall)", target,
                           uniform_nets[target], 0.0, f"scratch {epochs}",
                           bench.scratch(epochs))
        new["wall_of"] = {"method": row["method"], "seconds": wall}


def ranked_rows(bench: Bench, base: list[str], args: argparse.Namespace,
                targets: list[float], dev: torch.device) -> None:
    """The `prunesearch one-schedule ranked` rows.
    Per target, the product with `model.train.schedule_epochs = D + F`: a supernet stage on
    RANKING_IMAGES images that only ranks candidates (`finetune.init = "dense"`), an emo
    search held to [BAND x target, target] of dense MACs on it, and its best proxy point in
    that band cut from the dense model's own weights and trained the F epochs left of the
    schedule, on as many images per epoch as leaves the supernet's and the fine-tuning's
    images together at F epochs."""
    d_ep, f_ep = args.dense_epochs, args.budget_epochs
    per_epoch = min(len(bench.data.train_x), args.max_train_images or len(bench.data.train_x))
    ranking = min(RANKING_IMAGES, per_epoch)
    images = (f_ep * per_epoch - ranking) // f_ep
    method, widths = RANKED, []
    if args.ranked_widths:
        ratios = [float(r) for r in args.ranked_widths.split(",")]
        method += f" ({len(ratios)} widths)"
        widths = [f"space.width_ratios={ratios}"]
    schedule = [*widths, f"search.budget={args.search_budget}",
                f"model.train.schedule_epochs={d_ep + f_ep}",
                "supernet.epochs=1", f"supernet.max_train_images={ranking}",
                "finetune.init=dense", f"finetune.epochs={f_ep}", "search.strategy=emo"]
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            overrides = base + schedule + [f"search.emo.macs_min={BAND * target:.4f}",
                                           f"search.emo.macs_max={target}"]
            found = searched(overrides, Path(tmp), f"ranked-{target}", dev)
            cfg = load_config(None, overrides)
            source = found.prep.finetune_source(cfg)
            arch = found.best_under(target, BAND * target)
            row = bench.record(method, target, found.prep.space.slicer(source).build(arch),
                               found.supernet_s + found.search_s,
                               f"supernet ranking {ranking / per_epoch:.2f} + ft {f_ep} "
                               f"x {images / per_epoch:.2f} (continuing a {d_ep + f_ep}-epoch "
                               f"schedule)", bench.finetune(source, f_ep, cfg, images))
            row["arch"] = arch.to_dict()
            row["dense_test_acc"] = found.prep.dense_meta.get("test_score")


def merge(model: str, parts: list[dict[str, Any]]) -> None:
    """Put runs into results/peers_<model>.json, one entry per budget (the rows of runs of the
    same budget, e.g. one process per target, joined), and rewrite the model's tables."""
    path = RESULTS / f"peers_{model}.json"
    # files of the earlier protocol (no budgets) are replaced, not mixed in
    budgets = json.loads(path.read_text()).get("budgets", {}) if path.exists() else {}
    fresh: dict[str, dict[str, Any]] = {}
    for part in parts:
        run = part["run"]
        if part["label"] in fresh:
            join_run(fresh[part["label"]], run)
        else:
            fresh[part["label"]] = run
    for label, run in fresh.items():
        budgets[label] = extend_stored(budgets[label], run) if label in budgets else run
    save_results(f"peers_{model}", {"model": model, "budgets": budgets})
    write_tables(model, budgets)


def extend_stored(stored: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A budget's stored run with a later run's rows: a method and target the later run
    measured again is replaced (its seeds are not added to the old ones); the stored rows it
    did not run are kept, so one more target or method does not drop the rest of the table.
    The stored dense model's figures and machine head the table, with both dates and both
    commands."""
    rerun = {(r["method"], r["target"]) for r in run["rows"]}
    kept = [r for r in stored["rows"] if (r["method"], r["target"]) not in rerun]
    if not kept:
        return run
    first, last = stored["machine"]["date"].split(" to ")[0], run["machine"]["date"]
    dates = first if first == last else f"{first} to {last}"
    return {**stored, **both_runs(stored, run), "rows": kept + run["rows"],
            "machine": {**stored["machine"], "date": dates}}


def both_runs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The seeds, time and command of two runs counted as one."""
    return {"seeds": sorted(set(first["seeds"]) | set(second["seeds"])),
            "total_s": first["total_s"] + second["total_s"],
            "command": f"{first['command']} & {second['command']}"}


def join_run(joined: dict[str, Any], run: dict[str, Any]) -> None:
    """Add a part's rows to `joined`: a row of a method and target already there (another
    seed of the same networks: dense model, pruning and search do not depend on the seed)
    gains the part's test accuracies; other rows are appended."""
    index = {(r["method"], r["target"]): r for r in joined["rows"]}
    for row in run["rows"]:
        same = index.get((row["method"], row["target"]))
        if same is None:
            joined["rows"].append(row)
            continue
        n_old, n_new = len(same["test_acc"]), len(row["test_acc"])
        same["train_s"] = (same["train_s"] * n_old + row["train_s"] * n_new) / (n_old + n_new)
        same["test_acc"] = same["test_acc"] + row["test_acc"]
    joined.update(both_runs(joined, run))


def budget_tables(model: str, label: str, run: dict[str, Any]) -> list[str]:
    m, dense, rows = run["machine"], run["dense"], run["rows"]
    device = device_label(m, run["device"])
    lines = [f"**{model}, D = {run['dense_epochs']}, F = {run['budget_epochs']}** (dense: "
             f"{100 * dense['test_acc']:.2f}% test after D epochs, "
             f"{dense['macs'] / 1e6:.2f} M MACs, {dense['params'] / 1e3:.1f} k params)", "",
             "| target | method | training after dense | test acc % (mean +- std) | vs "
             "uniform-scratch | MACs ratio | params | latency ratio b1 / b64 |",
             "|---|---|---|---|---|---|---|---|"]
    equal_time = [r for r in rows if "wall" in r["method"]]
    for target in sorted({r["target"] for r in rows}, reverse=True):
        at = [r for r in rows if r["target"] == target and r not in equal_time]
        uniform = next((r for r in at if r["method"] == "uniform-scratch"), None)
        best = max(at, key=mean_acc)
        for r in at:
            gap = "-"
            if uniform is not None:
                diff = mean_acc(r) - mean_acc(uniform)
                gap = f"{100 * diff:+.2f}"
            acc = mean_std(r["test_acc"])
            lines.append(f"| {target} | {r['method']} | {r['epochs']} | "
                         f"{f'**{acc}**' if r is best else acc} | {gap} | "
                         f"{r['macs_ratio']:.3f} | {r['params']} | "
                         f"{r['latency_ratio']['1']:.2f} / {r['latency_ratio']['64']:.2f} |")
    if equal_time:
        lines += ["", "At equal wall time (uniform-scratch trained as many epochs as the whole "
                  "prunesearch pipeline's time allows, dense training included):", "",
                  "| target | prunesearch row | its wall s | test acc % | uniform-scratch in "
                  "that wall | test acc % | prunesearch vs it |", "|---|---|---|---|---|---|---|"]
        for r in equal_time:
            ps = timed_row(r, rows)
            diff = mean_acc(ps) - mean_acc(r)
            lines.append(f"| {r['target']} | {ps['method']} | {r['wall_of']['seconds']:.0f} | "
                         f"{mean_std(ps['test_acc'])} | {r['epochs']} | "
                         f"{mean_std(r['test_acc'])} | {100 * diff:+.2f} |")
    lines.append(f"\n`{run['command']}` on {m['date']}: {device}, torch {m['torch']}; "
                 f"{run['total_s'] / 60:.0f} min in all; seeds {run['seeds']}; fine-tuning "
                 f"{run.get('finetune_loss', 'with distillation from the network cut from')}; "
                 f"search: {searches(rows)}.\n")
    return lines


def write_tables(model: str, budgets: dict[str, dict[str, Any]]) -> None:
    lines: list[str] = []
    for label in sorted(budgets):
        lines += budget_tables(model, label, budgets[label])
    publish(f"peers_{model}", lines)
    publish("peers_best", best_rows_table())


def best_rows_table() -> list[str]:
    """Every stored model, budget and target in one table: uniform-scratch, the best row of
    each side (prunesearch: any of its recipes; Torch-Pruning: any of its pruners) with its
    gap, and uniform-scratch at the best prunesearch pipeline's wall time where trained."""
    lines = ["| model | D + F epochs | target | uniform-scratch | prunesearch's best row | "
             "Torch-Pruning's best row | uniform-scratch at that prunesearch row's wall time "
             "(prunesearch vs it) |", "|---|---|---|---|---|---|---|"]
    for model in ("resnet20", "mobilenetv2_small"):
        path = RESULTS / f"peers_{model}.json"
        budgets = json.loads(path.read_text())["budgets"] if path.exists() else {}
        for label in sorted(budgets):
            run = budgets[label]
            for target in sorted({r["target"] for r in run["rows"]}, reverse=True):
                at = [r for r in run["rows"] if r["target"] == target]
                uniform = next((r for r in at if r["method"] == "uniform-scratch"), None)
                if uniform is None:
                    continue
                lines.append(f"| {model} | {run['dense_epochs']} + {run['budget_epochs']} | "
                             f"{target} | {100 * mean_acc(uniform):.2f} | "
                             f"{best_cell(at, 'prunesearch', uniform)} | "
                             f"{best_cell(at, 'tp-', uniform)} | {equal_wall_cell(at)} |")
    return lines


def searches(rows: list[dict[str, Any]]) -> str:
    """How the table's prunesearch rows searched: the ranked ones differently from the rest."""
    ranked = any("ranked" in r["method"] for r in rows)
    plain = any(r["method"].startswith("prunesearch") and "ranked" not in r["method"]
                for r in rows)
    parts = (["TPE on the weight-sharing proxy"] if plain else []) + (
        [f"emo on the supernet ranking within [{BAND}, 1] x the target for the ranked rows"]
        if ranked else [])
    return "; ".join(parts) or "none"


def mean_acc(row: dict[str, Any]) -> float:
    return statistics.mean(row["test_acc"])


def timed_row(wall: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The prunesearch row whose pipeline time an equal-wall uniform-scratch row was given."""
    return next(r for r in rows if r["method"] == wall["wall_of"]["method"]
                and r["target"] == wall["target"])


def best_cell(rows: list[dict[str, Any]], prefix: str, uniform: dict[str, Any]) -> str:
    """The best row whose method starts with `prefix`, with its gap to uniform-scratch."""
    named = [r for r in rows if r["method"].startswith(prefix)]
    if not named:
        return "-"
    top = max(named, key=mean_acc)
    return (f"{top['method']} {100 * mean_acc(top):.2f} "
            f"({100 * (mean_acc(top) - mean_acc(uniform)):+.2f})")


def equal_wall_cell(rows: list[dict[str, Any]]) -> str:
    """uniform-scratch at the wall time of the best prunesearch row that has such a row."""
    pairs = [(timed_row(w, rows), w) for w in rows if "wall_of" in w]
    if not pairs:
        return "-"
    ps, wall = max(pairs, key=lambda pair: mean_acc(pair[0]))
    return (f"{100 * mean_acc(wall):.2f}, {wall['epochs']} "
            f"({100 * (mean_acc(ps) - mean_acc(wall)):+.2f})")


if __name__ == "__main__":
    main()
