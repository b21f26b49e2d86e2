"""Evaluators by kind: `register_evaluator`, `create_evaluator`, `list_evaluators`.

An evaluator is one module: a factory registered with its own options model. The run config's
`[evaluator]` section is `kind = "<name>"` plus that model's fields (config.py validates it
against the registered model of the kind it names).

    @register_evaluator("mine", options=MyOptions)
    def build(space, model, data, options, seed) -> Evaluator: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from prunesearch.errors import ConfigError
from prunesearch.evaluators.base import Evaluator
from prunesearch.options import Options
from prunesearch.spaces import Space

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits

EvaluatorFactory = Callable[[Space, nn.Module, "DatasetSplits", Options, int], Evaluator]


@dataclass(frozen=True)
class _Entry:
    build: EvaluatorFactory
    options: type[Options]


_EVALUATORS: dict[str, _Entry] = {}


def register_evaluator(name: str, options: type[Options]
                       ) -> Callable[[EvaluatorFactory], EvaluatorFactory]:
    """Register `build(space, model, data, options, seed) -> Evaluator` as kind `name`."""

    def wrap(build: EvaluatorFactory) -> EvaluatorFactory:
        if name in _EVALUATORS:
            raise ValueError(f"evaluator '{name}' is already registered")
        _EVALUATORS[name] = _Entry(build, options)
        return build

    return wrap


def list_evaluators() -> list[str]:
    return sorted(_EVALUATORS)


def _entry(kind: str) -> _Entry:
    if kind not in _EVALUATORS:
        raise ConfigError(f"unknown evaluator.kind '{kind}'; available: "
                          f"{', '.join(list_evaluators())}.")
    return _EVALUATORS[kind]


def evaluator_options(kind: str) -> type[Options]:
    """The options model of evaluator `kind` (ConfigError naming the kinds if unknown)."""
    return _entry(kind).options


def create_evaluator(kind: str, space: Space, model: nn.Module, data: DatasetSplits,
                     options: Options | None = None, seed: int = 0) -> Evaluator:
    """Evaluator `kind` over `space`, scoring with `model`'s weights on `data`'s splits."""
    entry = _entry(kind)
    return entry.build(space, model, data, options or entry.options(), seed)
