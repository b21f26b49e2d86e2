"""Scoring a network on in-memory tensors: the task's loss and the score every stage ranks
networks by. A `Task` is both; by default (`Task.default`) the loss is cross-entropy and the
metric accuracy, for labels one class per example (N,), or perplexity for one per position
(N, T) (a language model, logits (N, T, classes): every loss and count flattens positions into
examples). A user's task (`[task]`, prunesearch.task) brings its own loss and metric."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.errors import UserError
from prunesearch.metrics import Metric, metric_of

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MeasureFn = Callable[[torch.Tensor, torch.Tensor], float]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every labelled position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def correct_predictions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many labelled positions the arg-max class gets right."""
    return (logits.argmax(-1) == y).sum()


def _summed_over_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                         per_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         grad: bool = False) -> float:
    """sum of `per_batch(logits, labels)` over `x` in eval mode on the model's device
    (gradients only with `grad`); the model's mode is restored."""
    if len(x) == 0:
        raise ValueError("evaluating a model needs at least one example")
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        with torch.set_grad_enabled(grad):
            for i in range(0, len(x), batch_size):
                logits = model(x[i : i + batch_size].to(device))
                total += per_batch(logits, y[i : i + batch_size].to(device)).detach().double()
    finally:
        model.train(was_training)
    return total.item()


@dataclass(frozen=True)
class Task:
    """What a network is trained to do: its loss, and the metric its score comes from.
    `measure` (a user's metric) sees a whole split's outputs and labels at once, so metrics
    that do not average over batches (mean IoU) are exact; None: accuracy or perplexity."""

    metric: Metric
    loss: LossFn = cross_entropy
    measure: MeasureFn | None = None

    @staticmethod
    def default(labels: torch.Tensor) -> Task:
        return Task(metric_of(labels))

    @property
    def identity(self) -> str:
        """The user's functions by qualified name ("" for the built-in tasks): what trained
        weights depend on besides the data (prunesearch.data.DatasetSplits.fingerprint)."""
        if self.classifies:
            return ""
        return " ".join([_qualified(self.loss), _qualified(self.measure),
                         "lower" if self.metric.lower_is_better else "higher"])

    @property
    def classifies(self) -> bool:
        """True for the built-in tasks, whose outputs are class logits (accuracy is shown
        while training, distillation applies)."""
        return self.measure is None and self.loss is cross_entropy

    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int = 512) -> float:
        """The score every stage ranks networks by (prunesearch.metrics), in eval mode; the
        model's mode is restored."""
        if self.measure is not None:
            return self.metric.score(self._measured(model, x, y, batch_size))
        if self.metric.lower_is_better:
            return 1.0 / evaluate_perplexity(model, x, y, batch_size)
        return evaluate_accuracy(model, x, y, batch_size)

    def _measured(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int) -> float:
        outputs: list[torch.Tensor] = []

        def keep(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            outputs.append(logits.detach().cpu())
            return torch.zeros(())

        _summed_over_batches(model, x, y, batch_size, keep)
        value = self.measure(torch.cat(outputs), y.cpu())
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        lower = self.metric.lower_is_better
        if not math.isfinite(value) or (value < 0 if lower else not 0 <= value <= 1):
            raise UserError(
                f"task.metric '{_qualified(self.measure)}' returned {value}; a metric where "
                f"higher is better must lie in [0, 1] (IoU, accuracy, F1), one where lower "
                f"is better (task.higher_is_better = false) must be >= 0 (an error). Rescale "
                f"it, or set task.higher_is_better to match it.")
        return value


def _qualified(fn: Callable[..., object] | None) -> str:
    return "none" if fn is None else f"{fn.__module__}:{fn.__qualname__}"


def _backward_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def backward(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = task.loss(logits, y)
        loss.backward()
        return loss

    return backward


@contextmanager
def loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task,
                   batch_size: int = 128) -> Iterator[None]:
    """While the block runs, the model's parameters hold the gradient of the task's loss
    summed over `x` (eval mode: no norm statistics or dropout change); cleared after."""
    model.zero_grad(set_to_none=True)
    try:
        _summed_over_batches(model, x, y, batch_size, _backward_loss(task), grad=True)
        yield
    finally:
        model.zero_grad(set_to_none=True)


def evaluate_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """Top-1 accuracy (of every labelled position) in eval mode; the mode is restored."""
    return _summed_over_batches(model, x, y, batch_size, correct_predictions) / y.numel()


def evaluate_perplexity(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """exp(mean cross-entropy per labelled position) in eval mode; the mode is restored."""
    total = _summed_over_batches(model, x, y, batch_size,
                                 lambda logits, yb: cross_entropy(logits, yb) * yb.numel())
    return math.exp(total / y.numel())


class Splits(Protocol):
    """What scoring reads of a dataset (prunesearch.data.DatasetSplits, which carries its
    task and imports this module)."""

    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    task: Task


def split_scores(model: nn.Module, data: Splits) -> dict[str, float]:
    """`val_score` and `test_score` of `model` on the whole validation and test splits."""
    return {"val_score": data.task.score(model, data.val_x, data.val_y),
            "test_score": data.task.score(model, data.test_x, data.test_y)}
