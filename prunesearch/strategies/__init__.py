"""Search strategies. Importing this package registers the built-in ones."""

from prunesearch.strategies import (  # noqa: F401
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
from prunesearch.strategies.base import (
    AskTellStrategy,
    Budget,
    Environment,
    Problem,
    SearchContext,
    Strategy,
    TrainingKit,
    TrainingStrategy,
)
from prunesearch.strategies.registry import (
    create_strategy,
    list_strategies,
    register_strategy,
    strategy_trains,
)

__all__ = ["AskTellStrategy", "Budget", "Environment", "Problem", "SearchContext", "Strategy",
           "TrainingKit", "TrainingStrategy", "create_strategy", "list_strategies",
           "register_strategy", "strategy_trains"]
