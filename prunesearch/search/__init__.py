"""Search strategies. Importing this package registers the built-in ones."""

from prunesearch.search import dp, emo, emo_pms, optuna_samplers, uniform  # noqa: F401
from prunesearch.search.base import AskTellStrategy, Budget, SearchContext, Strategy
from prunesearch.search.registry import create_strategy, list_strategies, register_strategy

__all__ = ["AskTellStrategy", "Budget", "SearchContext", "Strategy", "create_strategy",
           "list_strategies", "register_strategy"]
