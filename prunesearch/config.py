"""A run config: pydantic models of the TOML file. Unknown keys and wrong types are refused.

`load_config(path, overrides)` reads TOML, applies `--set key=value` overrides by dotted path and
validates; every failure becomes a `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prunesearch.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int | None = Field(None, ge=1, description="examples held out of the training "
                                 "split (default: the dataset's own, 5000 for fashion-mnist)")
    download: bool = True


class TrainConfig(_Section):
    """Dense-training recipe: SGD with momentum, cosine schedule, light augmentation."""

    epochs: int = Field(3, ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = True
    max_train_images: int | None = Field(None, ge=1, description="train on a prefix (smoke jobs)")


class ModelConfig(_Section):
    name: str = "resnet20"
    width_mult: float = Field(1.0, gt=0)
    checkpoint: str | None = None
    train: TrainConfig = TrainConfig()


class SpaceConfig(_Section):
    width_ratios: list[float] = [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    depth: bool = True
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")
    densities: list[float] = Field(default_factory=list, description="weight-density choices "
                                   "per conv/linear layer (e.g. 1.0 down to 0.02); empty: none")

    @field_validator("width_ratios")
    @classmethod
    def _ratios_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < r <= 1 for r in v):
            raise ValueError("width_ratios must be a non-empty list of numbers in (0, 1]")
        return sorted(set(v))

    @field_validator("densities")
    @classmethod
    def _densities_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < d <= 1 for d in v):
            raise ValueError("densities must be fractions of a layer's weights in (0, 1]")
        return sorted(set(v))


class EmoConfig(_Section):
    """Options of the `emo` strategy (pymoo)."""

    algorithm: str = "nsga2"
    pop_size: int = Field(40, ge=4)
    max_generations: int | None = Field(None, ge=1, description="a budget in generations")
    macs_min: float = Field(0.0, ge=0, le=1, description="constraint: MACs ratio >= this")
    macs_max: float = Field(1.0, gt=0, le=1, description="constraint: MACs ratio <= this")
    third_objective: Literal["params"] | None = None


class DpConfig(_Section):
    """Options of the `dp` strategy (layer-adaptive allocation)."""

    cost: Literal["macs", "params"] = "macs"
    bins: int = Field(2000, ge=10, description="budget bins of the dynamic program")
    additivity_samples: int = Field(30, ge=0, description="random archs checking additivity")
    targets: list[float] = Field(default_factory=list, description="cost ratios whose exact "
                                 "allocation is evaluated first (the rest spreads on the front)")


class MasksConfig(_Section):
    """Options of the weight-mask baselines: global-magnitude, random-masks, imp, bip."""

    densities: list[float] = Field(default_factory=list, description="overall weight "
                                   "densities evaluated (global-magnitude: first, then a sweep; "
                                   "random-masks/bip: one trained network each)")
    min_density: float = Field(0.0, ge=0, lt=1, description="global-magnitude/imp: per-layer "
                               "floor")
    distribution: Literal["uniform", "erk"] = "uniform"
    prune_fraction: float = Field(0.2, gt=0, lt=1, description="imp: of remaining, per round")
    rewind_steps: int = Field(200, ge=0, description="imp: optimizer steps of the checkpoint "
                              "every round rewinds to")
    epochs: int | None = Field(None, ge=1, description="training epochs per network or round "
                               "(default: model.train.epochs)")
    gamma: float = Field(1.0, gt=0, description="bip: lower-level strong-convexity weight")
    score_lr: float = Field(0.01, gt=0, description="bip: Adam step on the mask scores "
                            "(scores start at |weight| / std of the layer)")

    @field_validator("densities")
    @classmethod
    def _densities_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < d <= 1 for d in v):
            raise ValueError("densities must be fractions of the weights in (0, 1]")
        return sorted(set(v), reverse=True)


class DifferentiableConfig(_Section):
    """Options shared by the differentiable strategies (tas, dass)."""

    targets: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                 description="MACs ratios: one search each")
    epochs: int = Field(3, ge=1)
    tolerance: float = Field(0.05, gt=0, lt=1, description="band around each target")
    macs_weight: float = Field(2.0, ge=0, description="weight of the MACs loss")
    arch_lr: float = Field(1e-2, gt=0, description="Adam on the architecture logits")
    arch_weight_decay: float = Field(1e-3, ge=0)
    tau_max: float = Field(10.0, gt=0)
    tau_min: float = Field(0.1, gt=0)
    max_train_images: int | None = Field(None, ge=2, description="search on a prefix")

    @field_validator("targets")
    @classmethod
    def _targets_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < t <= 1 for t in v):
            raise ValueError("targets must be a non-empty list of MACs ratios in (0, 1]")
        return sorted(set(v))


class TasConfig(DifferentiableConfig):
    """Options of the `tas` strategy (widths and depths)."""

    n_sample: int = Field(2, ge=1, description="choices sampled per dimension per step")


class DassConfig(DifferentiableConfig):
    """Options of the `dass` strategy (weight densities); targets are sparse-MACs ratios."""

    targets: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.5],
                                 description="sparse-MACs ratios: one search each")


class SearchConfig(_Section):
    strategy: str = "tpe"
    budget: int = Field(120, ge=1, description="number of candidate evaluations")
    time_limit: float | None = Field(None, gt=0, description="seconds of search wall time")
    batch_size: int = Field(8, ge=1, description="candidates asked per ask/tell round")
    seed_uniform: bool = Field(True, description="random/tpe/emo start with the uniform sweep")
    emo: EmoConfig = EmoConfig()
    dp: DpConfig = DpConfig()
    masks: MasksConfig = MasksConfig()
    tas: TasConfig = TasConfig()
    dass: DassConfig = DassConfig()


class EvaluatorConfig(_Section):
    calib_batches: int = Field(8, ge=1, description="training batches for adaptive BN")
    batch_size: int = Field(256, ge=1)
    val_images: int = Field(1000, ge=1, description="fixed validation subset for the proxy")


class FinetuneConfig(_Section):
    """Which front points are trained back to strength, and how (dense recipe's schedule)."""

    enabled: bool = True
    targets: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                 description="MACs ratios: the best proxy point under each")
    top_k: int | None = Field(None, ge=1, description="instead: K points spread on the front")
    ids: list[int] = Field(default_factory=list, description="instead: these candidate ids "
                           "(any candidate, on the front or not)")
    epochs: int | None = Field(None, ge=1, description="default: model.train.epochs")
    init: Literal["inherit", "scratch"] = "inherit"
    kd: bool = True
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)

    @field_validator("targets")
    @classmethod
    def _targets_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in v):
            raise ValueError("targets must be MACs ratios in (0, 1]")
        return sorted(set(v))


class RunConfig(_Section):
    name: str = "run"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    space: SpaceConfig = SpaceConfig()
    search: SearchConfig = SearchConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    finetune: FinetuneConfig = FinetuneConfig()


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
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as random: keep it as a string
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


def config_from_dict(tree: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}' (check its spelling; see the example "
                                f"configs in configs/)")
            else:
                problems.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"Invalid config {source}: " + "; ".join(problems) + ".") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML config (the embedded default job when `path` is None) and apply overrides."""
    if path is None:
        text = resources.files("prunesearch.configs").joinpath(DEFAULT_CONFIG).read_text()
        source = "(embedded default job)"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file '{p}' does not exist; pass the path of a TOML file "
                              f"such as configs/smoke.toml, or no argument for the default job.")
        text, source = p.read_text(), f"'{p}'"
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"Config {source} is not valid TOML: {err}. Fix the syntax.") from None
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(tree, key, value)
    return config_from_dict(tree, source)


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

    emit("", cfg.model_dump())
    return "\n".join(lines).lstrip() + "\n"
