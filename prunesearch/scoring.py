"""Scoring a network on in-memory tensors: the task loss, accuracy, perplexity and the score
every stage ranks networks by. Labels are one class per example (N,) or one per position (N, T)
for a language model, whose logits are (N, T, classes): every loss and count flattens positions
into examples."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.metrics import metric_of

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits

def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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


def _backward_task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = task_loss(logits, y)
    loss.backward()
    return loss


@contextmanager
def loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 128) -> Iterator[None]:
    """While the block runs, the model's parameters hold the gradient of the task loss summed
    over `x` (eval mode: no norm statistics or dropout change); cleared after."""
    model.zero_grad(set_to_none=True)
    try:
        _summed_over_batches(model, x, y, batch_size, _backward_task_loss, grad=True)
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
                                 lambda logits, yb: task_loss(logits, yb) * yb.numel())
    return math.exp(total / y.numel())


def evaluate_score(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """The score every stage ranks networks by (see prunesearch.metrics): accuracy for one
    label per example, 1 / perplexity for a label per position."""
    if metric_of(y).lower_is_better:
        return 1.0 / evaluate_perplexity(model, x, y, batch_size)
    return evaluate_accuracy(model, x, y, batch_size)


def split_scores(model: nn.Module, data: DatasetSplits) -> dict[str, float]:
    """`val_score` and `test_score` of `model` on the whole validation and test splits."""
    return {"val_score": evaluate_score(model, data.val_x, data.val_y),
            "test_score": evaluate_score(model, data.test_x, data.test_y)}
