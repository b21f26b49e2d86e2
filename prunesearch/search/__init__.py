"""Search strategies. Importing this package registers the built-in ones."""

from prunesearch.search import (  # noqa: F401
    dass,
    dp,
    emo,
    emo_pms,
    global_magnitude,
    optuna_samplers,
    tas,
    trained,
    uniform,
)
from prunesearch.search.base import AskTellStrategy, Budget, SearchContext, Strategy, TrainingKit
from prunesearch.search.registry import (
    create_strategy,
    list_strategies,
    register_strategy,
    strategy_trains,
)

__all__ = ["AskTellStrategy", "Budget", "SearchContext", "Strategy", "TrainingKit",
           "create_strategy", "list_strategies", "register_strategy", "strategy_trains"]
