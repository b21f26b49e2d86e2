"""The score networks are ranked by, and how it reads to a user.

Every stage stores one score per network in [0, 1], higher is better: fronts, hypervolume,
strategies and fine-tuning targets need nothing else. What it means follows from the data: for
one class per example it is top-1 accuracy; for a label at every position (a language model's
next-token data) it is 1 / perplexity, i.e. exp(-mean cross-entropy), the geometric mean of the
probability given to the right token. Tables and plots show the metric's own value (perplexity:
lower is better), named; `summary.json` records which metric a run used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Metric:
    name: str  # "accuracy" or "perplexity"
    lower_is_better: bool

    def value(self, score: float) -> float:
        """The metric's own value of a stored score."""
        return 1.0 / score if self.lower_is_better else score

    def show(self, score: float | None) -> str:
        if score is None:
            return ""
        return f"{self.value(score):.2f}" if self.lower_is_better else f"{score:.4f}"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "lower_is_better": self.lower_is_better,
                "score": "1 / perplexity" if self.lower_is_better else "accuracy"}


ACCURACY = Metric("accuracy", lower_is_better=False)
PERPLEXITY = Metric("perplexity", lower_is_better=True)


def metric_of(labels: torch.Tensor) -> Metric:
    """Accuracy for one label per example, perplexity for a label per position."""
    return PERPLEXITY if labels.dim() == 2 else ACCURACY


def metric_from_json(entry: Mapping[str, object] | None) -> Metric:
    """The metric a summary.json or export meta.json records (`Metric.to_json`); files from
    before metrics were named record none: accuracy."""
    return PERPLEXITY if entry and entry.get("name") == PERPLEXITY.name else ACCURACY
