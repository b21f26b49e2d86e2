"""Trained networks' scores kept across benchmark commands.

Training dominates an equal-latency cell (a resnet20 trained from scratch for 9 epochs costs
~300 s per seed on 2 CPU cores), and the cells of different runtimes, batch sizes and targets
share many networks: the same uniform grid network is the best one under several targets.
Training is deterministic for a seed on CPU, so a network trained once under the same recipe,
data and seed has the scores it would have again. Each score is written the moment its
training ends, so a command stopped mid-way loses only the training in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Scores:
    """What a benchmark row keeps from one training: as train_model's report names them."""

    test_score: float
    val_score: float
    seconds: float


class TrainedCache:
    """Scores by (what was trained, how, seed) in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.exists() else {})

    @staticmethod
    def key(what: dict[str, Any], seed: int) -> str:
        """A stable name of one training: its description (network, recipe, data) and seed."""
        text = json.dumps({**what, "seed": seed}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def wrap(self, train: Callable[[nn.Module, int], Any], what: dict[str, Any]
             ) -> Callable[[nn.Module, int], Scores]:
        """`train`, answered from the cache where this training already ran."""
        def cached(net: nn.Module, seed: int) -> Scores:
            name = self.key(what, seed)
            if name in self.entries:
                hit = self.entries[name]
                return Scores(hit["test_score"], hit["val_score"], hit["seconds"])
            report = train(net, seed)
            scores = Scores(report.test_score, report.val_score, report.seconds)
            self.entries[name] = {**scores.__dict__, "what": what, "seed": seed}
            self._save()
            return scores
        return cached

    def _save(self) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.entries, indent=1, sort_keys=True,
                                      default=str) + "\n")
        os.replace(partial, self.path)
