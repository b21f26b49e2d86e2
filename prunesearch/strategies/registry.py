"""Strategies by name: `register_strategy`, `create_strategy`, `list_strategies`.

A strategy is one module: its class, registered with its own options model. The run config's
`[search.<name>]` section is validated against that model (prunesearch.app.config builds the
section list from this registry), and `create_strategy` hands the strategy its own options only.

    class MyOptions(Options):
        rounds: int = Field(3, ge=1)

    @register_strategy("mine", options=MyOptions)
    class Mine(Strategy):
        def search(self, ctx): ...          # self.options is a MyOptions
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from prunesearch.errors import ConfigError
from prunesearch.options import Options
from prunesearch.strategies.base import Strategy, TrainingStrategy

_STRATEGIES: dict[str, type[Strategy]] = {}
_NAME = re.compile(r"[a-z][a-z0-9-]*")


def register_strategy(name: str, options: type[Options] | None = None
                      ) -> Callable[[type[Strategy]], type[Strategy]]:
    """Register a Strategy class under `name` (lowercase words joined by '-'), with the
    options model of its `[search.<name>]` section (None: the strategy takes no options)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"strategy name '{name}' must be lowercase letters, digits and '-'")

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if name in _STRATEGIES:
            raise ValueError(f"strategy '{name}' is already registered "
                             f"({_STRATEGIES[name].__module__}.{_STRATEGIES[name].__name__})")
        cls.name = name
        cls.options_model = options
        _STRATEGIES[name] = cls
        return cls

    return wrap


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}' in search.strategy; available: "
                          f"{', '.join(list_strategies())}.")
    return _STRATEGIES[name]


def strategy_options() -> dict[str, type[Options]]:
    """The options model of every registered strategy that has options, by name."""
    return {n: c.options_model for n, c in sorted(_STRATEGIES.items())
            if c.options_model is not None}


def create_strategy(name: str, options: Options | Mapping[str, Any] | None = None) -> Strategy:
    """The strategy `name` with its options: a validated options model (a run config's
    `cfg.search.options_of(name)`), a mapping validated here, or None for the defaults."""
    cls = strategy_class(name)
    model = cls.options_model
    if model is None:
        if options:
            raise ConfigError(f"strategy '{name}' takes no options; got {dict(options)}.")
        return cls()
    if not isinstance(options, model):
        try:
            options = model.model_validate(dict(options or {}))
        except ValidationError as err:
            raise ConfigError(f"invalid options for strategy '{name}': "
                              + "; ".join(f"search.{name}.{'.'.join(map(str, e['loc']))}: "
                                          f"{e['msg']}" for e in err.errors())) from None
    return cls(options)


def strategy_trains(name: str) -> bool:
    """Whether the strategy trains its own networks (imp, bip, random-masks)."""
    return name in _STRATEGIES and issubclass(_STRATEGIES[name], TrainingStrategy)
