"""Strategies by name: `register_strategy`, `create_strategy`, `list_strategies`."""

from __future__ import annotations

from collections.abc import Callable

from prunesearch.errors import ConfigError
from prunesearch.search.base import Strategy

_STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if name in _STRATEGIES:
            raise ValueError(f"strategy '{name}' is already registered")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return wrap


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def create_strategy(name: str, **options: object) -> Strategy:
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}' in search.strategy; available: "
                          f"{', '.join(list_strategies())}.")
    return _STRATEGIES[name](**options)


def strategy_trains(name: str) -> bool:
    """Whether the strategy trains its own networks (imp, bip, random-masks)."""
    return name in _STRATEGIES and bool(getattr(_STRATEGIES[name], "trains", False))
