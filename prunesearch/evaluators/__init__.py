"""Scoring Archs: the Evaluator interface, the registry of evaluator kinds and the
weight-sharing evaluator (registered as "weight-sharing")."""

from prunesearch.evaluators.base import Evaluator, Result
from prunesearch.evaluators.registry import (
    create_evaluator,
    evaluator_options,
    list_evaluators,
    register_evaluator,
)
from prunesearch.evaluators.weight_sharing import WeightSharingEvaluator, recalibrate_batchnorm

__all__ = ["Evaluator", "Result", "WeightSharingEvaluator", "create_evaluator",
           "evaluator_options", "list_evaluators", "recalibrate_batchnorm", "register_evaluator"]
