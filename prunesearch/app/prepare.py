"""What every stage of a job works on: the data, the dense model (cached, trained or given), its
search space, the supernet stage when the config asks, the evaluator and the latency table.
`prepare` is the one place that builds them: `run`, `finetune`, `export`, `train`, the worker
and the Python API all call it."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunesearch.config import RunConfig
from prunesearch.data import DatasetSplits, load_dataset
from prunesearch.data.given import GIVEN_DATA
from prunesearch.errors import UserError
from prunesearch.evaluators import Evaluator, create_evaluator
from prunesearch.fileio import default_cache_dir
from prunesearch.latency.gate import LatencyGate
from prunesearch.latency.limit import LatencyLimit, measured_limit, ratio_meter
from prunesearch.latency.runtimes import check_runtime
from prunesearch.latency.table import LatencyModel, build_latency_model
from prunesearch.models import build_model
from prunesearch.objective import CostAxis
from prunesearch.runs.export import GIVEN_MODEL
from prunesearch.scoring import loss_gradients, split_scores
from prunesearch.spaces import Arch, Space
from prunesearch.spaces.options import SpaceConfig
from prunesearch.strategies import TrainingKit
from prunesearch.task import task_of
from prunesearch.training import dense_model, train_model
from prunesearch.training.finetune import reinitialise
from prunesearch.training.supernet import NearLimit, train_supernet

log = logging.getLogger("prunesearch")

TAYLOR_EXAMPLES = 1024  # training examples whose loss gradients rank channels (taylor)


@dataclass(frozen=True)
class Given:
    """What the Python API hands over in place of names: the user's dense network (its
    weights are the dense model as they are, or trained first with `model.train` when
    `trained` is False) and/or the user's data."""

    model: nn.Module | None = None
    data: DatasetSplits | None = None
    trained: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use "
                        "--device cpu or auto.")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda; got '{name}'.")
    return torch.device(name)


def load_run_data(cfg: RunConfig, dev: torch.device | None = None,
                  given: Given | None = None) -> DatasetSplits:
    """The config's dataset and split, or the given data (on `dev` when given)."""
    if given is not None and given.data is not None:
        data = given.data
    elif cfg.data.dataset == GIVEN_DATA:
        raise UserError(f"Run '{cfg.name}' was searched on datasets handed to "
                        f"prunesearch.search() in Python; use it from Python: "
                        f"prunesearch.open_run(RUN_DIR, model=..., train=..., val=..., test=...).")
    else:
        data = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.val_size, cfg.seed,
                            cfg.data.download, {"image_size": cfg.data.image_size,
                                                "test_fraction": cfg.data.test_fraction,
                                                "input_column": cfg.data.input_column,
                                                "label_column": cfg.data.label_column})
    data = task_of(cfg.task, data)
    return data if dev is None else data.to(dev)


def space_of(space_cfg: SpaceConfig, model: nn.Module, example: torch.Tensor) -> Space:
    """The `[space]` section's Space over `model` (every place that builds one calls this)."""
    return Space.from_model(model, example, space_cfg.width_ratios, space_cfg.depth,
                            space_cfg.ignore, space_cfg.densities, space_cfg.round_to,
                            space_cfg.layer_uniform)


def build_space(cfg: RunConfig, model: nn.Module, data: DatasetSplits) -> Space:
    """The run's Space over `model`, its channel order fixed as `space.importance` says."""
    space = space_of(cfg.space, model, data.train_x[:1])
    if cfg.space.importance == "taylor":  # the first examples: every process ranks alike
        with loss_gradients(model, data.train_x[:TAYLOR_EXAMPLES],
                            data.train_y[:TAYLOR_EXAMPLES], data.task):
            space.fix_channel_order(space.graph.channel_order(taylor=True))
    return space


def make_evaluator(cfg: RunConfig, space: Space, model: nn.Module,
                   data: DatasetSplits) -> Evaluator:
    """The config's evaluator kind with its options, over the dense model's weights."""
    return create_evaluator(cfg.evaluator.kind, space, model, data, cfg.evaluator, cfg.seed)


@dataclass
class Prepared:
    """What every stage of a job works on: data, the dense model, its space and evaluator."""

    data: DatasetSplits
    model: nn.Module
    dense_meta: dict[str, Any]
    supernet_meta: dict[str, Any] | None  # None: no supernet stage
    space: Space
    evaluator: Evaluator
    timings: dict[str, float] = field(default_factory=dict)
    latency: LatencyModel | None = None  # when the run predicts latency (search.objective)
    dense_model: nn.Module | None = None  # before the supernet stage (None: `model`)
    limit: LatencyLimit | None = None  # search.max_latency in the table's terms
    gate: LatencyGate | None = None  # what holds candidates to search.max_latency

    def finetune_source(self, cfg: RunConfig) -> nn.Module:
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

    def training_kit(self, cfg: RunConfig, dev: torch.device,
                     given: Given | None = None) -> TrainingKit:
        """Data, recipe and seeded fresh models for the strategies that train (imp, bip, ...):
        the zoo's or the user's architecture with fresh weights."""
        shape, classes = self.data.input_shape, self.data.num_classes

        def fresh_model(seed: int) -> nn.Module:
            if given is not None and given.model is not None:
                return reinitialise(copy.deepcopy(given.model), seed).to(dev)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return build_model(cfg.model.name, shape, classes, cfg.model.width_mult).to(dev)

        return TrainingKit(self.data, cfg.model.train, dev, fresh_model, self.evaluator.val_x,
                           self.evaluator.val_y)


def given_dense_model(cfg: RunConfig, given: Given, data: DatasetSplits, dev: torch.device,
                      progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The user's network as the dense model (a copy: theirs is never changed), trained first
    with `model.train` unless it is `trained`, and scored on val and test."""
    model = copy.deepcopy(given.model).to(dev)
    meta: dict[str, Any] = {"model": cfg.model.name, "data": data.name,
                            "data_fingerprint": data.fingerprint(), "checkpoint": None,
                            "cached": False}
    if not given.trained:
        report = train_model(model, data, cfg.model.train, seed=cfg.seed, device=dev,
                             progress=progress)
        return model, {**meta, "val_score": report.val_score, "test_score": report.test_score,
                       "seconds": report.seconds}
    return model, {**meta, **split_scores(model, data)}


def prepare(cfg: RunConfig, dev: torch.device, progress: bool, latency_table: bool = True,
            given: Given | None = None) -> Prepared:
    """Load data, get the dense model (cache or train, or the given one), build the space,
    train the supernet (when `[supernet]` asks; cached too), and the evaluator over the
    weights that came out; the latency table when the run predicts latency and
    `latency_table` (export reads the predictions from the run's files instead)."""
    if cfg.model.name == GIVEN_MODEL and (given is None or given.model is None):
        raise UserError(f"Run '{cfg.name}' was searched over a network handed to "
                        f"prunesearch.search() in Python, which no name rebuilds; use it from "
                        f"Python: prunesearch.open_run(RUN_DIR, model=..., train=..., ...).")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = load_run_data(cfg, dev, given)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if given is not None and given.model is not None:
        model, dense = given_dense_model(cfg, given, data, dev, progress)
    else:
        model, dense = dense_model(cfg.model, data, seed=cfg.seed, device=dev,
                                   progress=progress)
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
                                         cache_dir=default_cache_dir(), progress=progress,
                                         near=near_limit_draws(cfg, space, model, dev))
        timings["supernet_s"] = time.perf_counter() - t
        log.info("supernet: %s",
                 {k: supernet.get(k) for k in ("val_score", "test_score", "cached")})
    return prepared_over(cfg, data, model, dense, supernet, space, dev, timings, latency_table,
                         dense_model=dense_weights)


def near_limit_draws(cfg: RunConfig, space: Space, dense: nn.Module,
                     dev: torch.device) -> NearLimit | None:
    """The supernet's near-limit draws when supernet.sample asks for them; the latency table
    they predict with is built (or read from its cache) only if the stage trains."""
    if cfg.supernet.sample != "near-limit" or cfg.search.max_latency is None:
        return None
    tables: list[LatencyModel] = []

    def ratio(arch: Arch) -> float:
        if not tables:
            check_runtime(cfg.search.latency_runtime, dev)
            tables.append(build_latency_model(space, dense, cfg.search.latency_batch, dev,
                                              runtime=cfg.search.latency_runtime))
        return tables[0].ratio(arch)
    return NearLimit(cfg.search.max_latency, cfg.search.latency_batch,
                     cfg.search.latency_runtime, ratio)


def prepared_over(cfg: RunConfig, data: DatasetSplits, model: nn.Module,
                  dense: dict[str, Any], supernet: dict[str, Any] | None, space: Space,
                  dev: torch.device, timings: dict[str, float],
                  latency_table: bool, dense_model: nn.Module | None = None) -> Prepared:
    """The evaluator over `model`'s weights, and the latency table when the run needs one;
    `dense_model`: the dense weights when a supernet stage replaced them in `model`."""
    evaluator = make_evaluator(cfg, space, model, data)
    latency = None
    if cfg.search.predicts_latency and latency_table:
        t = time.perf_counter()
        check_runtime(cfg.search.latency_runtime, dev)
        latency = build_latency_model(space, model, cfg.search.latency_batch, dev,
                                      runtime=cfg.search.latency_runtime)
        evaluator.predict_latency = latency.predict
        timings["latency_table_s"] = time.perf_counter() - t
        log.info("latency table (%s, batch %d, %s): %d entries, calibration error %.1f%%%s",
                 cfg.search.latency_runtime, cfg.search.latency_batch, latency.meta["device"],
                 latency.meta["entries"],
                 100 * latency.meta["calibration_median_abs_error"], _cached_note(latency))
    limit = None
    if latency is not None and cfg.search.max_latency is not None:
        limit = LatencyLimit(cfg.search.max_latency, 1.0, ())
        if cfg.search.measure_limit:
            limit = measured_limit(latency, model, cfg.search.max_latency,
                                   cfg.search.latency_batch, dev, cfg.search.latency_runtime,
                                   cfg.seed)
            log.info("search.max_latency %.3f: %d networks near it measure %.3f x their "
                     "prediction; candidates are held to %.3f of dense as predicted",
                     limit.target, len(limit.measured), limit.scale, limit.predicted_ratio)
    prep = Prepared(data, model, dense, supernet, space, evaluator, timings, latency,
                    dense_model, limit)
    if latency is not None and limit is not None:
        measure = (ratio_meter(latency, model, cfg.search.latency_batch, dev,
                               cfg.search.latency_runtime) if cfg.search.measure_limit else None)
        prep.gate = LatencyGate(latency.predict,
                                limit.predicted_ratio * prep.cost_axis("latency").dense,
                                limit.target, measure)
    return prep


def _cached_note(latency: LatencyModel) -> str:
    anchor = latency.meta.get("anchor")
    if not latency.meta.get("cached") or anchor is None:
        return ""
    return (f" (cached; re-anchored on the dense model timed now: "
            f"{anchor['dense_measured_us_now'] / 1000:.3f} ms, x{anchor['scale']:.2f})")


def train_stages(cfg: RunConfig, dev: torch.device, progress: bool
                 ) -> tuple[DatasetSplits, list[tuple[str, dict[str, Any]]]]:
    """`prunesearch train`: the dense model (and its supernet stage when the config has one)
    trained or found in the cache, with what each stage reports."""
    data = load_run_data(cfg, dev)
    model, meta = dense_model(cfg.model, data, seed=cfg.seed, device=dev, progress=progress)
    stages = [(cfg.model.name, meta)]
    if cfg.supernet.epochs:
        space = build_space(cfg, model, data)
        _, supernet = train_supernet(model.eval(), space, data, cfg.supernet, cfg.model.train,
                                     cfg.space, seed=cfg.seed, device=dev,
                                     cache_dir=default_cache_dir(), progress=progress,
                                     near=near_limit_draws(cfg, space, model, dev))
        stages.append((f"its supernet ({cfg.supernet.epochs} epochs)", supernet))
    return data, stages
