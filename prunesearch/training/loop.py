"""The one training loop: a network on in-memory tensors, with an optional teacher.

Labels are one class per example (N,) or one per position (N, T) for a language model, whose
logits are (N, T, classes): every loss and count here flattens positions into examples.

Mini-batches are slices of a permutation drawn from a torch.Generator seeded by the caller, and
augmentation draws from the same generator: no DataLoader workers, no global RNG, so the same
seed and initial weights give the same trained weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from prunesearch.errors import ModelError
from prunesearch.models.options import TrainConfig
from prunesearch.scoring import correct_predictions, cross_entropy, split_scores
from prunesearch.training import distributed

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits

MAX_SHIFT = 2  # pixels of random translation (pad + random crop)
_REFRESH_EVERY = 20  # steps between progress-bar updates; reading the loss syncs the device


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's tempered class probabilities, one row per labelled position."""
    return F.softmax(teacher_logits.reshape(-1, teacher_logits.shape[-1]) / temperature, dim=1)


def distillation_kl(logits: torch.Tensor, soft: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """T^2 * KL(soft || student_T), averaged over labelled positions (Hinton et al.'s scale)."""
    student = F.log_softmax(logits.reshape(-1, logits.shape[-1]) / temperature, dim=1)
    return F.kl_div(student, soft, reduction="batchmean") * temperature**2


@dataclass(frozen=True)
class TrainReport:
    epochs: int
    train_loss: float | None  # mean loss of the last epoch; None when epochs == 0
    train_acc: float | None  # running accuracy of the last epoch (augmented, train mode)
    val_score: float
    test_score: float
    seconds: float  # training time, evaluation excluded
    images_per_s: float | None


def random_translate(
    x: torch.Tensor, gen: torch.Generator, max_shift: int = MAX_SHIFT
) -> torch.Tensor:
    """Shift each image of an (N, C, H, W) batch by up to `max_shift` pixels each way.

    Edge padding rather than zeros: the data are normalised, so zero is the mean intensity, not
    the background of a digit or a garment. The batch comes back contiguous (N, C, H, W): a
    channels-last batch makes oneDNN (torch 2.13 CPU) hang or crash in the backward pass of a
    strided 1x1 convolution with fewer than 8 input channels, which pruned shortcuts have."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=gen).to(x.device)
    rows = dy + torch.arange(h, device=x.device)  # (N, H): source row of each output row
    cols = dx + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around a slice: the result comes out as (N, H, W, C)
    shifted = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    # clone, not .contiguous(): with one channel the permuted view already counts as
    # contiguous, yet its strides still make convolutions pick channels-last
    return shifted.clone(memory_format=torch.contiguous_format)


def training_tensors(data: DatasetSplits, max_images: int | None,
                     device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split cut to its first `max_images` (smoke jobs), on `device` if given."""
    x, y = data.train_x, data.train_y
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    return (x, y) if device is None else (x.to(device), y.to(device))


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator,
                  augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of full mini-batches: the permutation is drawn from `gen` when this is called,
    each batch's random translation (images with one label each, when `augment`: a label per
    pixel would not move with them) when the batch is taken. So a loop that draws from `gen`
    between batches (Gumbel noise, a second data stream) keeps one reproducible stream of
    random numbers. The last partial batch is dropped."""
    order = torch.randperm(len(x), generator=gen).to(x.device)
    translate = augment and x.dim() == 4 and y.dim() == 1

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(len(x) // batch_size):
            idx = order[step * batch_size:(step + 1) * batch_size]
            xb = x[idx]
            yield (random_translate(xb, gen) if translate else xb), y[idx]

    return batches()


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation from a teacher (Hinton et al. 2015): the loss is
    `alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)`; the T^2
    keeps the soft-target gradients on the scale of the hard-label ones."""

    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9

    def loss(self, logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = soft_targets(self.teacher(xb), self.temperature)
        kl = distillation_kl(logits, soft, self.temperature)
        return self.alpha * kl + (1 - self.alpha) * cross_entropy(logits, yb)


def progress_bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        disable=disable,
    )


def recipe_optimizer(params: Iterable[torch.Tensor], recipe: TrainConfig, total_steps: int,
                     span: ScheduleSpan | None = None
                     ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The recipe's optimizer (SGD with Nesterov momentum, or AdamW; weight decay) and a
    cosine schedule over `total_steps` steps, or over the part of a longer schedule that
    `span` places these steps on: every loop that trains weights uses this one."""
    if recipe.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=recipe.lr,
                                                       weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    if span is None:
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, span.factors(total_steps))


def continued_span(recipe: TrainConfig, start: float, epochs: float) -> ScheduleSpan | None:
    """The span of a stage that follows `start` epochs of the dense recipe's longer schedule
    (None when the recipe has none: the stage runs its own)."""
    length = recipe.longer_schedule
    return None if length is None else ScheduleSpan(start, length, epochs)


def dense_span(recipe: TrainConfig) -> ScheduleSpan | None:
    """The dense model's span: the first `epochs` of its longer schedule."""
    return continued_span(recipe, 0, recipe.epochs)


@dataclass(frozen=True)
class ScheduleSpan:
    """A stage's place on a cosine schedule longer than itself (`model.train.schedule_epochs`):
    the schedule lasts `length` epochs, of which `start` ran in earlier stages, and this stage
    runs `epochs` of it (the lr stays at zero past the end)."""

    start: float
    length: float
    epochs: float

    def factors(self, total_steps: int) -> Callable[[int], float]:
        """The lr multiplier at each of the stage's steps."""
        per_step = self.epochs / max(1, total_steps)

        def factor(step: int) -> float:
            done = min(1.0, (self.start + step * per_step) / self.length)
            return 0.5 * (1 + math.cos(math.pi * done))
        return factor


def train_model(
    model: nn.Module,
    data: DatasetSplits,
    recipe: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    progress: bool = True,
    distill: Distillation | None = None,
    label: str = "epoch",
    on_step: Callable[[int], None] | None = None,
    span: ScheduleSpan | None = None,
) -> TrainReport:
    """Train `model` in place on `data.train_*` (moved to `device`), then score val and test.

    SGD with Nesterov momentum and weight decay, cosine learning rate stepped per batch,
    the task's loss (`data.task`), or the distillation loss when `distill` is given (its
    teacher is kept in eval mode and sees the same augmented batches). The last partial batch
    of each epoch is dropped (BatchNorm needs more than one example, and equal batches keep
    the schedule simple); a new permutation each epoch drops different images each time.
    `on_step(k)` is called after the k-th optimizer step (k from 1), e.g. to snapshot a rewind
    point. `span` places the epochs on a longer schedule (default: the recipe's own,
    `dense_span`)."""
    model.to(device)
    classifies = data.task.classifies  # else no training accuracy to show
    x, y = training_tensors(data, recipe.max_train_images, device)
    n = len(x)
    if recipe.epochs and n < 2:
        raise ModelError(f"cannot train on {n} image(s): BatchNorm needs at least 2 per batch; "
                         f"raise model.train.max_train_images or use a larger dataset.")
    batch_size = max(1, min(recipe.batch_size, n))
    steps = n // batch_size
    gen = torch.Generator().manual_seed(seed)
    opt, sched = recipe_optimizer(model.parameters(), recipe, recipe.epochs * steps,
                                  span or dense_span(recipe))
    net = model
    if distributed.world_size() > 1:  # under torchrun: each process its share of a batch
        distributed.check_batch(batch_size, "The training batch size")
        net = nn.parallel.DistributedDataParallel(model)

    if distill is not None:
        distill.teacher.to(device).eval()
    train_loss = train_acc = None
    start = time.perf_counter()
    model.train()
    with progress_bar(disable=not progress) as bar:
        for epoch in range(recipe.epochs):
            task = bar.add_task(f"{label} {epoch + 1}/{recipe.epochs}", total=steps, stats="")
            batches = epoch_batches(x, y, batch_size, gen, recipe.augment)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for step, (xb, yb) in enumerate(batches):
                xb, yb = distributed.share(xb), distributed.share(yb)
                logits = net(xb)
                loss = (data.task.loss(logits, yb) if distill is None
                        else distill.loss(logits, xb, yb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if on_step is not None:
                    on_step(epoch * steps + step + 1)
                loss_sum += loss.detach() * yb.numel()
                if classifies:
                    correct += correct_predictions(logits, yb)
                if (step + 1) % _REFRESH_EVERY == 0 or step + 1 == steps:
                    seen = (step + 1) * batch_size * (yb.numel() // len(yb))
                    train_loss = distributed.summed(loss_sum).item() / seen
                    stats = f"loss {train_loss:.4f}"
                    if classifies:
                        train_acc = distributed.summed(correct).item() / seen
                        stats += f"  acc {100 * train_acc:.2f}%"
                    bar.update(task, completed=step + 1, stats=stats)
            if not math.isfinite(train_loss):
                raise ModelError(f"training diverged in epoch {epoch + 1} (loss {train_loss}); "
                                 f"lower model.train.lr (now {recipe.lr}).")
    seconds = time.perf_counter() - start
    images = recipe.epochs * steps * batch_size
    return TrainReport(
        epochs=recipe.epochs,
        train_loss=train_loss,
        train_acc=train_acc,
        **split_scores(model, data),
        seconds=seconds,
        images_per_s=images / seconds if images else None,
    )
