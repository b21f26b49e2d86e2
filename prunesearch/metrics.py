"""The score networks are ranked by, and how it reads to a user.

Every stage stores one score per network in [0, 1], higher is better: fronts, hypervolume,
strategies and fine-tuning targets need nothing else. What it means follows from the data: for
one class per example it is top-1 accuracy; for a label at every position (a language model's
next-token data) it is 1 / perplexity, i.e. exp(-mean cross-entropy), the geometric mean of the
probability given to the right token. Tables and plots show the metric's own value (perplexity:
lower is better), named; `summary.json` records which metric a run used. A user's own metric
(`[task] metric`, prunesearch.task) is stored as itself when higher is better (it must lie in
[0, 1]: IoU, F1) and as 1 / (1 + value) when lower is better (an error >= 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Metric:
    name: str  # "accuracy", "perplexity", or a user's metric ([task] metric)
    lower_is_better: bool
    custom: bool = False  # a user's: in [0, 1] when higher is better, else >= 0

    def value(self, score: float) -> float:
        """The metric's own value of a stored score."""
        if not self.lower_is_better:
            return score
        return 1.0 / score - 1.0 if self.custom else 1.0 / score

    def score(self, value: float) -> float:
        """The stored score of a value of the metric (`value` inverted)."""
        if not self.lower_is_better:
            return value
        return 1.0 / (1.0 + value) if self.custom else 1.0 / value

    def show(self, score: float | None) -> str:
        if score is None:
            return ""
        if self.custom:
            return f"{self.value(score):.4g}"
        return f"{self.value(score):.2f}" if self.lower_is_better else f"{score:.4f}"

    def to_json(self) -> dict[str, object]:
        kind = "1 / (1 + value)" if self.custom else "1 / perplexity"
        return {"name": self.name, "lower_is_better": self.lower_is_better,
                "custom": self.custom,
                "score": kind if self.lower_is_better else self.name}


ACCURACY = Metric("accuracy", lower_is_better=False)
PERPLEXITY = Metric("perplexity", lower_is_better=True)


def metric_of(labels: torch.Tensor) -> Metric:
    """Accuracy for one label per example, perplexity for a label per position."""
    return PERPLEXITY if labels.dim() == 2 else ACCURACY


def metric_from_json(entry: Mapping[str, object] | None) -> Metric:
    """The metric a summary.json or export meta.json records (`Metric.to_json`); files from
    before metrics were named record none: accuracy."""
    if entry and entry.get("custom") is True and isinstance(entry.get("name"), str):
        return Metric(str(entry["name"]), entry.get("lower_is_better") is True, custom=True)
    return PERPLEXITY if entry and entry.get("name") == PERPLEXITY.name else ACCURACY
