"""A run config: pydantic models of the TOML file, composed of the components' own sections
(`[model]`, `[space]`, `[supernet]`, `[finetune]` live beside their code). Unknown keys and
wrong types are refused.

`read_config_tree` reads TOML and applies `--set key=value` overrides by dotted path;
`validate_config` validates the tree with the schema the application composed (prunesearch.app
.config adds each strategy's and evaluator's options); every failure becomes a `ConfigError`
naming the field and the fix. This module imports no registry.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from prunesearch.errors import ConfigError
from prunesearch.models.options import ModelConfig
from prunesearch.objective import Objective
from prunesearch.options import Options
from prunesearch.plugins import describe_error, refuse_code_inside
from prunesearch.spaces.options import SpaceConfig
from prunesearch.task import TaskConfig
from prunesearch.training.options import FinetuneConfig, SupernetConfig


class DataConfig(Options):
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int | None = Field(None, ge=1, description="examples held out of the training "
                                 "split (default: the dataset's own, 5000 for fashion-mnist)")
    download: bool = True
    image_size: int | None = Field(None, ge=1, description="imagefolder: resize every image "
                                   "to this many pixels square (unset: they share one size)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="imagefolder and arrays "
                                 "without a test split: the seeded share of the examples "
                                 "held out as the test set")
    input_column: str | None = Field(None, description="hf-disk: the column of inputs "
                                     "(unset: the one column besides label_column)")
    label_column: str = Field("label", description="hf-disk: the column of integer classes")


class SearchConfig(Options):
    """`[search]`: the strategy and its budget. Each registered strategy with options adds its
    own `[search.<name>]` section (the application composes them in, prunesearch.app.config);
    `options_of(name)` reads it."""

    strategy: str = "tpe"
    budget: int = Field(120, ge=1, description="number of candidate evaluations")
    time_limit: float | None = Field(None, gt=0, description="seconds of search wall time")
    batch_size: int = Field(8, ge=1, description="candidates asked per ask/tell round")
    objective: Objective = Field("macs", description="the cost traded against accuracy: MACs, "
                                 "params, or latency predicted by a table measured on this "
                                 "machine's device")
    latency_batch: int = Field(1, ge=1, description="batch size latency is predicted for")
    latency_runtime: Literal["torch", "onnxruntime"] = Field(
        "torch", description="where latency is measured: torch eager on the run's device, or "
        "the network exported to ONNX and run by onnxruntime's CPU provider")
    max_latency: float | None = Field(None, gt=0, le=1, description="no candidate over this "
                                      "ratio of the dense model's latency (predicted, the "
                                      "prediction corrected near it: measure_limit)")
    measure_limit: bool = Field(True, description="with max_latency, time a few networks the "
                                "table predicts near it at the start and correct the limit by "
                                "their measured / predicted ratio, then time every candidate "
                                "predicted near the corrected limit and keep it only if it "
                                "measures under max_latency (false: trust the table, so a "
                                "cached table gives the same candidates every run)")
    storage: str | None = Field(None, description="an Optuna RDB URL (postgresql://user@host"
                                "/db, or sqlite:///file.db on one machine): the candidates "
                                "live in a study named after the run that `prunesearch worker` "
                                "processes join (keep the password in ~/.pgpass, not the URL)")

    @property
    def predicts_latency(self) -> bool:
        return self.objective == "latency" or self.max_latency is not None

    def options_of(self, strategy: str) -> Options | None:
        """The validated `[search.<strategy>]` section (None: the strategy has no options)."""
        return getattr(self, section_field(strategy), None)


class EvaluatorConfig(Options):
    """`[evaluator]`: `kind` plus the options of that evaluator kind (prunesearch.app.config)."""

    kind: str = "weight-sharing"


RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class RunConfig(Options):
    name: str = Field("run", description="the run folder's name under --out: letters, digits, "
                      "'.', '_', '-' (one path part, so never outside --out)")
    seed: int = Field(0, ge=0, lt=2**32, description="numpy and torch seeds take 32 bits")
    plugins: list[str] = Field(default_factory=list, description="modules imported before the "
                               "config is read: they register strategies, evaluators, datasets, "
                               "layer types")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    space: SpaceConfig = SpaceConfig()
    supernet: SupernetConfig = SupernetConfig()
    search: SearchConfig = SearchConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    task: TaskConfig = TaskConfig()

    @field_validator("name")
    @classmethod
    def _one_path_part(cls, v: str) -> str:
        if not re.fullmatch(RUN_NAME, v):
            raise ValueError("a run name is one folder name of at most 100 letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit (no '/', '..' "
                             "or empty name: the run stays inside --out)")
        return v

    @model_validator(mode="after")
    def _distillation_needs_class_logits(self) -> RunConfig:
        if self.task.custom and self.finetune.kd:
            raise ValueError("finetune.kd distils class logits, which a [task] with its own "
                             "loss or metric may not have; set finetune.kd = false")
        return self

    @model_validator(mode="after")
    def _schedule_leaves_fine_tuning(self) -> RunConfig:
        train = self.model.train
        if (train.longer_schedule and not self.schedule_epochs_left()
                and self.finetune.enabled and self.finetune.init != "scratch"):
            raise ValueError(
                f"model.train.schedule_epochs ({train.schedule_epochs}) leaves no epochs "
                f"for fine-tuning after the {self.epochs_before_finetuning()} epochs the "
                f"fine-tuned weights have had (it would run at lr 0); make it longer")
        return self

    @model_validator(mode="after")
    def _near_limit_has_a_limit(self) -> RunConfig:
        if self.supernet.sample == "near-limit" and self.search.max_latency is None:
            raise ValueError("supernet.sample = 'near-limit' draws the supernet's subnetworks "
                             "near search.max_latency, which is not set; set it, or use "
                             "supernet.sample = 'uniform'")
        return self

    def epochs_before_finetuning(self) -> int:
        """Epochs of training the weights fine-tuning starts from have had: the dense ones,
        and the supernet's unless fine-tuning starts from the dense model (finetune.init)."""
        supernet = 0 if self.finetune.init == "dense" else self.supernet.epochs
        return self.model.train.epochs + supernet

    def schedule_epochs_left(self) -> int | None:
        """Epochs of the dense recipe's longer schedule left after the training the fine-tuned
        weights have had (None without one, or with none left)."""
        train = self.model.train
        if train.longer_schedule is None:
            return None
        return max(0, train.longer_schedule - self.epochs_before_finetuning()) or None


DEFAULT_CONFIG = "default.toml"


def _set_dotted(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section.")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as err:
        if not re.fullmatch(r"[\w.:/+-]+", raw):  # not a bare word: a broken TOML value
            raise ConfigError(f"--set {dotted}={raw}: the value is not valid TOML ({err}). "
                              f"Quote strings whole (--set name='\"x\"'), write lists as "
                              f"[1, 2], or give a bare word without quotes.") from None
        value = raw  # a bare word such as random or runs/x: keep it as a string
    node[keys[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set expects key=value with a dotted key, e.g. --set search.budget=50; "
                f"got '{pair}'."
            )
        parsed.append((key.strip(), value.strip()))
    return parsed


def import_plugins(plugins: Any, source: str, run_dir: Path | None = None) -> None:
    """Import the modules a config names in `plugins` (they register what they define); for
    a config read back from `run_dir`, never one that lies inside that folder."""
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        raise ConfigError(f"Invalid config {source}: 'plugins' must be a list of module names, "
                          f"e.g. plugins = [\"mypackage.strategies\"]; got {plugins!r}.")
    for module in plugins:
        if run_dir is not None:
            refuse_code_inside(module, run_dir, f"Config {source}")
        try:
            importlib.import_module(module)
        except Exception as err:
            raise ConfigError(f"Config {source}: plugin module '{module}' cannot be imported "
                              f"({describe_error(err)}). Install it or put it on "
                              f"PYTHONPATH, or remove it from 'plugins'.") from None


def read_config_tree(path: str | Path | None, overrides: list[str] = ()
                     ) -> tuple[dict[str, Any], str]:
    """A TOML config as a tree with the overrides applied (the embedded default job when
    `path` is None), and how messages name it."""
    if path is None:
        text = resources.files("prunesearch.configs").joinpath(DEFAULT_CONFIG).read_text()
        source = "(embedded default job)"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file '{p}' does not exist; pass the path of a TOML file "
                              f"such as configs/smoke.toml, or no argument for the default job.")
        source = f"'{p}'"
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"Config {source} is not UTF-8 text ({err.reason} at byte "
                              f"{err.start}); TOML files are UTF-8: save it as UTF-8.") from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"Config {source} is not valid TOML: {err}. Fix the syntax.") from None
    if not tree:
        raise ConfigError(f"Config {source} sets nothing (an empty file would silently run the "
                          f"whole default job). Give at least a name and the sections you "
                          f"mean, or run `prunesearch run` with no config for the default job.")
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(tree, key, value)
    return tree, source


def validate_config(tree: dict[str, Any], source: str, schema: type[RunConfig],
                    run_dir: Path | None = None) -> RunConfig:
    """`tree` validated by `schema` (RunConfig with the sections of the strategies and
    evaluator the application composed in); every problem named in one ConfigError. For a
    config read back from `run_dir`, code inside that folder is refused."""
    try:
        cfg = schema.model_validate(tree)
    except ConfigError as err:
        raise ConfigError(f"Invalid config {source}: {err}") from None
    except ValidationError as err:
        sections = [f.alias or n for n, f in schema.model_fields["search"].annotation
                    .model_fields.items() if n not in SearchConfig.model_fields]
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                hint = (f"; strategies with options: {', '.join(sections)}"
                        if where.startswith("search.") and where.count(".") == 1 else "")
                problems.append(f"unknown key '{where}' (check its spelling; see the example "
                                f"configs in configs/{hint})")
            else:
                problems.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"Invalid config {source}: " + "; ".join(problems) + ".") from None
    if run_dir is not None:
        for name in (cfg.model.name, cfg.data.dataset, cfg.task.loss or "",
                     cfg.task.metric or ""):
            if ":" in name:
                refuse_code_inside(name, run_dir, f"Config {source}")
    return cfg


def section_field(strategy: str) -> str:
    """The attribute of SearchConfig that holds `[search.<strategy>]`."""
    return strategy.replace("-", "_")


def config_to_toml(cfg: RunConfig) -> str:
    """The fully resolved config as TOML (None values are omitted: they mean 'default')."""
    lines: list[str] = []

    def emit(prefix: str, data: dict[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
        if prefix:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {json.dumps(v)}")
        for k, v in data.items():
            if isinstance(v, dict):
                emit(f"{prefix}.{k}" if prefix else k, v)

    data = cfg.model_dump(by_alias=True)
    chosen = section_field(cfg.search.strategy)
    for name, field in type(cfg.search).model_fields.items():  # of the strategies' sections,
        if name in SearchConfig.model_fields:  # only the chosen one's and those set
            continue
        if name != chosen and name not in cfg.search.model_fields_set:
            data["search"].pop(field.alias or name, None)
    emit("", data)
    return "\n".join(lines).lstrip() + "\n"
