"""Scoring Archs: the Evaluator interface and the weight-sharing evaluator."""

from prunesearch.evaluators.base import Evaluator, Result
from prunesearch.evaluators.weight_sharing import WeightSharingEvaluator, recalibrate_batchnorm

__all__ = ["Evaluator", "Result", "WeightSharingEvaluator", "recalibrate_batchnorm"]
