"""One job: config -> data + dense model -> space -> strategy with evaluator -> run directory."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunesearch import distributed
from prunesearch.allocator import allocator_settings
from prunesearch.config import RunConfig, SpaceConfig, config_to_toml
from prunesearch.data import DatasetSplits, load_dataset
from prunesearch.errors import UserError
from prunesearch.evaluators import Evaluator, Result, create_evaluator
from prunesearch.fileio import file_sha256
from prunesearch.finetune import choose_points, finetune_front, variant_name
from prunesearch.latency.measure import latency_ratio
from prunesearch.latency.table import LatencyModel, build_latency_model
from prunesearch.metrics import metric_of
from prunesearch.models import build_model, default_cache_dir, dense_model, evaluate_score
from prunesearch.models.train import loss_gradients
from prunesearch.objective import CostAxis
from prunesearch.runs.export import (
    FORMATS,
    build_slim,
    check_export_folder,
    check_onnx_installed,
    write_export,
)
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.runs.rundir import RunDir, RunView
from prunesearch.runs.shared import SharedStudy
from prunesearch.runs.study import StudyRecorder
from prunesearch.search import (
    Budget,
    SearchContext,
    Strategy,
    TrainingKit,
    create_strategy,
    strategy_trains,
)
from prunesearch.search.shared_search import SharedSearch
from prunesearch.spaces import Arch, Space
from prunesearch.supernet_training import train_supernet

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


def load_run_data(cfg: RunConfig, dev: torch.device | None = None) -> DatasetSplits:
    """The config's dataset and split (on `dev` when given)."""
    data = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.val_size, cfg.seed,
                        cfg.data.download)
    return data if dev is None else data.to(dev)


TAYLOR_EXAMPLES = 1024  # training examples whose loss gradients rank channels (taylor)


def build_space(cfg: RunConfig, model: torch.nn.Module, data: DatasetSplits) -> Space:
    """The run's Space over `model`, its channel order fixed as `space.importance` says."""
    space = space_of(cfg.space, model, data.train_x[:1])
    if cfg.space.importance == "taylor":  # the first examples: every process ranks alike
        with loss_gradients(model, data.train_x[:TAYLOR_EXAMPLES],
                            data.train_y[:TAYLOR_EXAMPLES]):
            space.fix_channel_order(space.graph.channel_order(taylor=True))
    return space


def space_of(space_cfg: SpaceConfig, model: torch.nn.Module, example: torch.Tensor) -> Space:
    """The `[space]` section's Space over `model` (every place that builds one calls this)."""
    return Space.from_model(model, example, space_cfg.width_ratios, space_cfg.depth,
                            space_cfg.ignore, space_cfg.densities, space_cfg.round_to)


def make_evaluator(cfg: RunConfig, space: Space, model: torch.nn.Module,
                   data: DatasetSplits) -> Evaluator:
    """The config's evaluator kind with its options, over the dense model's weights."""
    return create_evaluator(cfg.evaluator.kind, space, model, data, cfg.evaluator, cfg.seed)


@dataclass
class JobOutcome:
    run_dir: Path
    summary: dict[str, Any]


@dataclass
class Prepared:
    """What every stage of a job works on: data, the dense model, its space and evaluator."""

    data: DatasetSplits
    model: torch.nn.Module
    dense_meta: dict[str, Any]
    supernet_meta: dict[str, Any] | None  # None: no supernet stage
    space: Space
    evaluator: Evaluator
    timings: dict[str, float]
    latency: LatencyModel | None = None  # when the run predicts latency (search.objective)
    dense_model: torch.nn.Module | None = None  # before the supernet stage (None: `model`)

    def finetune_source(self, cfg: RunConfig) -> torch.nn.Module:
        """The network fine-tuned points are cut from (and distil from): the weights the
        search scored on, or the dense model's own when `finetune.init = "dense"`."""
        if cfg.finetune.init == "dense" and self.dense_model is not None:
            return self.dense_model
        return self.model

    def cost_axis(self, objective: str) -> CostAxis:
        """The cost `objective` names, priced on this job's space (latency: its table)."""
        if objective != "latency":
            return CostAxis.counted(objective, self.space)
        if self.latency is None:
            raise ValueError("no latency table was built for this job")
        dense = round(self.latency.predict(self.space.largest()), 3)
        return CostAxis("latency", dense, self.latency.predict, self.latency.expected)


def prepare(cfg: RunConfig, dev: torch.device, progress: bool,
            latency_table: bool = True) -> Prepared:
    """Load data, get the dense model (cache or train), build the space, train the supernet
    (when `[supernet]` asks; cached too), and the evaluator over the weights that came out;
    the latency table when the run predicts latency and `latency_table` (export reads the
    predictions from the run's files instead)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = load_run_data(cfg, dev)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model, dense = dense_model(cfg.model, data, seed=cfg.seed, device=dev, progress=progress)
    model.eval()
    timings["dense_s"] = time.perf_counter() - t
    log.info("dense model: %s", {k: dense.get(k) for k in ("val_score", "test_score", "cached")})
    t = time.perf_counter()
    space = build_space(cfg, model, data)
    timings["space_s"] = time.perf_counter() - t
    supernet, dense_weights = None, model
    if cfg.supernet.epochs:
        t = time.perf_counter()
        model, supernet = train_supernet(model, space, data, cfg.supernet, cfg.model.train,
                                         cfg.space, seed=cfg.seed, device=dev,
                                         cache_dir=default_cache_dir(), progress=progress)
        timings["supernet_s"] = time.perf_counter() - t
        log.info("supernet: %s",
                 {k: supernet.get(k) for k in ("val_score", "test_score", "cached")})
    return prepared_over(cfg, data, model, dense, supernet, space, dev, timings, latency_table,
                         dense_model=dense_weights)


def prepared_over(cfg: RunConfig, data: DatasetSplits, model: torch.nn.Module,
                  dense: dict[str, Any], supernet: dict[str, Any] | None, space: Space,
                  dev: torch.device, timings: dict[str, float],
                  latency_table: bool, dense_model: torch.nn.Module | None = None
                  ) -> Prepared:
    """The evaluator over `model`'s weights, and the latency table when the run needs one;
    `dense_model`: the dense weights when a supernet stage replaced them in `model`."""
    evaluator = make_evaluator(cfg, space, model, data)
    latency = None
    if cfg.search.predicts_latency and latency_table:
        t = time.perf_counter()
        latency = build_latency_model(space, model, cfg.search.latency_batch, dev)
        evaluator.predict_latency = latency.predict
        timings["latency_table_s"] = time.perf_counter() - t
        log.info("latency table (batch %d, %s): %d entries, calibration error %.1f%%%s",
                 cfg.search.latency_batch, latency.meta["device"], latency.meta["entries"],
                 100 * latency.meta["calibration_median_abs_error"],
                 " (cached)" if latency.meta.get("cached") else "")
    return Prepared(data, model, dense, supernet, space, evaluator, timings, latency,
                    dense_model)


def latency_limit(cfg: RunConfig, prep: Prepared) -> float | None:
    """search.max_latency in microseconds of the job's latency table."""
    if cfg.search.max_latency is None:
        return None
    return cfg.search.max_latency * prep.cost_axis("latency").dense


def training_kit(cfg: RunConfig, prep: Prepared, dev: torch.device) -> TrainingKit:
    """Data, recipe and seeded fresh models for the strategies that train (imp, bip, ...)."""
    shape, classes = prep.data.input_shape, prep.data.num_classes

    def fresh_model(seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(cfg.model.name, shape, classes, cfg.model.width_mult).to(dev)

    return TrainingKit(prep.data, cfg.model.train, dev, fresh_model, prep.evaluator.val_x,
                       prep.evaluator.val_y)


class _SearchProgress:
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
def _logging_to(run: RunDir, console: Console | None = None) -> Iterator[None]:
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


def run_job(cfg: RunConfig, out: Path, resume: bool = False, device: str = "auto",
            progress: bool = True, console: Console | None = None) -> JobOutcome:
    """Search, then (unless finetune.enabled is false) fine-tune the chosen front points."""
    console = console or Console(stderr=True)
    dev = resolve_device(device)
    strategy = create_strategy(cfg.search.strategy, cfg.search.options_of(cfg.search.strategy))
    check_objective(cfg, strategy.axes)
    storage = open_storage(cfg, strategy)  # a bad URL or server fails before any work
    with RunDir.open(out, cfg, resume) as run, _logging_to(run, console if progress else None):
        t0 = time.perf_counter()
        log.info("run %s: %s on %s, strategy %s, budget %d", cfg.name, cfg.model.name,
                 cfg.data.dataset, cfg.search.strategy, cfg.search.budget)
        try:
            prep = prepare(cfg, dev, progress)
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
        bar = _SearchProgress(cfg.search.budget, len(journal.candidates), console, progress)

        study = (None if strategy.keeps_study or shared else  # they ask and tell their own
                 StudyRecorder(run.path, strategy.name, prep.space, axis, recorded))

        def record(result: Result) -> None:
            journal.append(result, strategy.name)
            if study is not None:
                study.add(result)
            bar.update(result)

        ctx = SearchContext(prep.space, prep.evaluator,
                            Budget(cfg.search.budget, cfg.search.time_limit), cfg.seed,
                            run.path, record, n_evals=len(journal.candidates),
                            batch_size=cfg.search.batch_size, model=prep.model,
                            training=training_kit(cfg, prep, dev),
                            progress=bar.progress if progress else None, axis=axis,
                            max_latency_us=latency_limit(cfg, prep), shared=shared)
        t = time.perf_counter()
        with bar.progress:
            strategy.search(ctx)
        if shared is not None:
            shared.shared.set_attr("done", True)  # the workers stop
        prep.timings["search_s"] = time.perf_counter() - t
        summary = _write(cfg, run, prep, journal.candidates, strategy.name, t0,
                         finetuned=read_finetuned(run.path) if strategy.trains else [])
        if strategy.trains:
            log.info("%s trained its networks itself: no fine-tuning stage", strategy.name)
        elif cfg.finetune.enabled:
            front = finetune_inputs(cfg, run.path)
            summary = _finetune_and_write(cfg, run, prep, dev, progress, t0, front)
        return JobOutcome(run.path, summary)


def open_storage(cfg: RunConfig, strategy: Strategy) -> SharedStudy | None:
    """The run's shared study (not created yet) when `search.storage` asks for one."""
    if cfg.search.storage is None:
        return None
    if strategy.trains:
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


def finetune_run(run_dir: Path, overrides: list[str], device: str = "auto",
                 progress: bool = True, console: Console | None = None) -> JobOutcome | None:
    """`prunesearch finetune`: fine-tune a finished search's front (again, or another way:
    only `finetune.*` keys may be overridden). Under torchrun every process trains and the
    first one holds the run folder and writes it; the others return None."""
    from prunesearch.config import load_config

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
        prep = prepare(cfg, dev, progress=False)
        source = prep.finetune_source(cfg)
        finetune_front(cfg, run_dir, finetune_inputs(cfg, run_dir),
                       prep.space.slicer(source), source, prep.data, dev, False)
        return None
    with (RunDir.existing(run_dir) as run,
          _logging_to(run, (console or Console(stderr=True)) if progress else None)):
        t0 = time.perf_counter()
        front = finetune_inputs(cfg, run.path)  # before any training: bad input fails at once
        prep = prepare(cfg, dev, progress)
        return JobOutcome(run.path, _finetune_and_write(cfg, run, prep, dev, progress, t0,
                                                        front))


def finetune_inputs(cfg: RunConfig, run_dir: Path) -> list[dict[str, Any]]:
    """The front rows fine-tuning chooses from, with the run's files it reads checked: a
    tampered journal or finetune.csv, or targets that choose nothing, are UserErrors."""
    view = RunView.load(run_dir)
    front = view.candidate_rows(cfg.finetune.ids) if cfg.finetune.ids else view.front
    choose_points(front, cfg.finetune)
    read_finetuned(run_dir)
    return front


def _finetune_and_write(cfg: RunConfig, run: RunDir, prep: Prepared, dev: torch.device,
                        progress: bool, t0: float, front: list[dict[str, Any]]
                        ) -> dict[str, Any]:
    t = time.perf_counter()
    source = prep.finetune_source(cfg)
    finetune_front(cfg, run.path, front, prep.space.slicer(source), source, prep.data, dev,
                   progress)
    prep.timings["finetune_s"] = time.perf_counter() - t
    candidates = read_journal(run.path / "candidates.csv")
    return _write(cfg, run, prep, candidates, cfg.search.strategy, t0,
                  finetuned=read_finetuned(run.path))


def _write(cfg: RunConfig, run: RunDir, prep: Prepared, candidates: list, strategy: str,
           t0: float, finetuned: list[dict[str, Any]]) -> dict[str, Any]:
    ev = prep.evaluator
    dense_ref = {
        "macs": prep.space.dense_macs, "params": prep.space.dense_params,
        "val_score": evaluate_score(prep.model, ev.val_x, ev.val_y),
        "val_score_note": "the full network the candidates are sliced from (after the supernet "
                        "stage, if any) on the evaluator's validation subset; test_score is "
                        "the dense model's before it",
        "test_score": prep.dense_meta.get("test_score"),
        "checkpoint": prep.dense_meta.get("checkpoint"),
        "train_seconds": prep.dense_meta.get("seconds"), "cached": prep.dense_meta.get("cached"),
        "latency_us": prep.cost_axis("latency").dense if prep.latency else None,
    }
    prep.timings["total_s"] = time.perf_counter() - t0
    summary = run.write_results(candidates, dense_ref, {
        "name": cfg.name, "strategy": strategy, "dataset": cfg.data.dataset,
        "metric": metric_of(prep.data.val_y).to_json(),
        "model": cfg.model.name, "device": str(prep.data.train_x.device),
        "wall_s": prep.timings["total_s"], "timings": prep.timings, "seed": cfg.seed,
        "sparse_macs": prep.space.masked, "supernet": prep.supernet_meta,
        "latency_table": prep.latency.meta if prep.latency else None,
    }, f"{cfg.name}: {cfg.model.name} on {cfg.data.dataset}, {strategy}", finetuned,
        variant_name(cfg) if finetuned else None, prep.cost_axis(cfg.search.objective))
    log.info("results: %d candidates, front %d, hypervolume %.4f, %.1f s", summary["n_evals"],
             summary["front_size"], summary["hypervolume"]["value"], prep.timings["total_s"])
    return summary


def choose_export_point(view: RunView, point_id: int | None,
                        limit: tuple[str, float] | None) -> dict[str, Any]:
    """The candidate to export: by id (any successful candidate), or the most accurate front
    point (test accuracy when fine-tuned, else proxy) at or under `limit`, a (cost axis,
    ratio of the dense model's) pair: ("macs", 0.5) is --max-flops 0.5."""
    if (point_id is None) == (limit is None):
        raise UserError("Pass exactly one of --id N, --max-flops RATIO or --max-latency RATIO.")
    if point_id is not None:
        match = [c for c in view.candidates if c.id == point_id and c.result.ok]
        if not match:
            raise UserError(f"Run '{view.path}' has no successful candidate with id {point_id} "
                            f"(ids 0..{len(view.candidates) - 1}; see candidates.csv or "
                            f"`prunesearch show`).")
        test = {p["id"]: p["test_score"] for p in view.final_points}
        return {**view.candidate_rows([point_id])[0], "test_score": test.get(point_id)}
    name, max_ratio = limit
    axis = view.axis(name)
    under = [r for r in view.front if axis.ratio(r) <= max_ratio]
    if not under:
        smallest = min((axis.ratio(r) for r in view.front), default=None)
        option = "--max-flops" if name == "macs" else f"--max-{name}"
        raise UserError(f"No front point of '{view.path}' has at most {max_ratio} of the dense "
                        f"model's {axis.label} (the smallest has {smallest:.3f}); raise "
                        f"{option}.")
    return max(under, key=lambda r: (r["test_score"] is not None,
                                      r["test_score"] or r["val_score"]))


def _predicted_latency(view: RunView, point: dict[str, Any], cfg: RunConfig,
                       dense_now_ms: float) -> dict[str, Any] | None:
    """What the run's latency table predicted for the point (None: the run predicted none),
    in the table's microseconds and anchored on the dense model as the export timed it: a
    shared machine's speed can move 2.5x between the table's building and now (measured on the
    2-core VM, benchmarks/README.md), which the ratio survives and the microseconds do not.
    The table's device may differ from the CPU the export measures on."""
    dense = view.summary["dense"].get("latency_us")
    if point.get("latency_us") is None or not dense:
        return None
    table = view.summary.get("latency_table") or {}
    ratio, batch = point["latency_us"] / dense, cfg.search.latency_batch
    return {f"batch_{batch}_ms": point["latency_us"] / 1000, "ratio_to_dense": ratio,
            f"batch_{batch}_ms_anchored": ratio * dense_now_ms,
            "table_device": table.get("device")}


def export_run(run_dir: Path, point_id: int | None, limit: tuple[str, float] | None,
               formats: list[str], out: Path | None, progress: bool = True) -> Path:
    """`prunesearch export`: the chosen point as files (on the CPU), with checks and latency."""
    from prunesearch.config import load_config

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f"--format takes a comma list of {', '.join(FORMATS)}; got {formats}.")
    if "onnx" in formats:
        check_onnx_installed()
    view = RunView.load(run_dir)
    point = choose_export_point(view, point_id, limit)
    folder = out if out is not None else run_dir / "export" / str(point["id"])
    check_export_folder(folder)
    cfg = load_config(run_dir / "config.toml", run_dir=run_dir)
    prep = prepare(cfg, torch.device("cpu"), progress, latency_table=False)
    spec = {"model": cfg.model.name, "width_mult": cfg.model.width_mult,
            "input_shape": list(prep.data.input_shape), "num_classes": prep.data.num_classes,
            "arch": point["arch"]}
    tuned = [r for r in read_finetuned(run_dir)
             if r["id"] == point["id"] and r["variant"] == variant_name(cfg)]
    if tuned:
        state = torch.load(run_dir / tuned[0]["weights"], map_location="cpu", weights_only=True)
        model = build_slim(spec, state)
        source = f"fine-tuned ({tuned[0]['variant']})"
    else:  # sliced dense weights; BatchNorm recalibrated, as scored in the search
        model = prep.evaluator.build(Arch.from_dict(point["arch"]))
        source = "sliced dense weights, BatchNorm recalibrated (not fine-tuned)"
    threads = torch.get_num_threads()

    latency, dense_latency, ratio = {}, {}, {}
    for b in sorted({1, 64, cfg.search.latency_batch}):  # and the batch the run predicted
        key = f"batch_{b}_ms"
        latency[key], dense_latency[key], ratio[key] = latency_ratio(
            model, prep.model, tuple(prep.data.input_shape), b, pairs=20 if b == 1 else 8)
    meta = {
        "id": point["id"], "source": source, "run": str(run_dir), "arch": point["arch"],
        "macs": point["macs"], "params": point["params"], "macs_ratio": point["macs_ratio"],
        "proxy_val_score": point["val_score"],
        "test_score": evaluate_score(model, prep.data.test_x, prep.data.test_y),
        "metric": metric_of(prep.data.test_y).to_json(),
        "dense": {"macs": prep.space.dense_macs, "test_score": prep.dense_meta.get("test_score")},
        "latency": {"device": "cpu", "threads": threads, "allocator": allocator_settings(),
                    "statistic": "medians over turns alternating with the dense model (a turn: "
                                 "one untimed forward, then the median of 2 timed ones); the "
                                 "ratio is the median of the per-pair ratios",
                    "model": latency, "dense": dense_latency, "ratio_to_dense": ratio,
                    "predicted": _predicted_latency(
                        view, point, cfg, dense_latency[f"batch_{cfg.search.latency_batch}_ms"])},
    }
    write_export(model, spec, meta, folder, formats, prep.data.val_x[:8].cpu())
    return folder
