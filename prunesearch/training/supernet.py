"""The supernet stage: the dense model trained further as a weight-sharing supernet.

A network trained only at full size gives poor subnetworks when it is sliced: their scores
collapse at small widths, and fine-tuning starts far from a good network. This stage trains the
dense weights so that every subnetwork of the run's Space is a good network in its own right
(BigNAS's sandwich rule): each step, the largest subnetwork learns from the labels, the
smallest and `random_subnets` random ones from the largest's detached soft predictions
(in-place distillation), and the gradients of all of them make one SGD step. A width choice
keeps the first c channels of the space's fixed channel order and zeroes the rest, a depth
choice runs the first k blocks: exactly the subnetworks the Slicer cuts, so the evaluator,
fine-tuning and export inherit these weights unchanged. Density dimensions stay at full
density while training.

The result is cached beside the dense checkpoints, named by a hash of the dense weights, the
space, the data, the recipe and these options; an interrupted stage resumes from its last
finished epoch.

With `supernet.sample = "near-limit"` the random subnetworks are drawn among those the latency
table predicts near search.max_latency instead of over the whole space: a latency-limited
search ranks only those, and uniform draws rarely reach a tight limit (at 0.25 of dense, few
resnet20 subnetworks of the space qualify), so their shared weights are trained little.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.data import DatasetSplits
from prunesearch.errors import ModelError, UserError
from prunesearch.evaluators.weight_sharing import recalibrate_batchnorm
from prunesearch.fileio import load_error_reason, renamed_fields, write_torch
from prunesearch.latency.gate import NEAR as NEAR_LIMIT  # the band the search times, too
from prunesearch.models.options import TrainConfig
from prunesearch.scoring import Task, split_scores
from prunesearch.spaces import Arch, Space
from prunesearch.spaces.options import SpaceConfig
from prunesearch.spaces.supernet import Supernet
from prunesearch.training import distributed
from prunesearch.training.dense import read_checkpoint
from prunesearch.training.loop import (
    continued_span,
    distillation_kl,
    epoch_batches,
    progress_bar,
    recipe_optimizer,
    soft_targets,
    training_tensors,
)
from prunesearch.training.options import SupernetConfig

log = logging.getLogger("prunesearch")

FORMAT = 1  # bump when the stage's training changes, so old cache entries go stale
_CALIBRATION_IMAGES = 2048  # training images the full network's BatchNorm is re-estimated on
_NEAR_POOL = 20_000  # random subnetworks whose predictions choose the near-limit ones


@dataclass(frozen=True)
class NearLimit:
    """Draw the sandwich rule's random subnetworks among those predicted near `limit` (a
    ratio of dense latency in `runtime` at `batch`); `ratio` predicts, and is only called
    when the stage trains (a cached stage needs no latency table)."""

    limit: float
    batch: int
    runtime: str
    ratio: Callable[[Arch], float]

    def cache_fields(self) -> dict[str, Any]:
        return {"limit": self.limit, "batch": self.batch, "runtime": self.runtime,
                "band": NEAR_LIMIT}

    def archs(self, space: Space, seed: int) -> list[Arch]:
        """The subnetworks of a seeded random pool predicted within NEAR_LIMIT of the limit."""
        gen = torch.Generator().manual_seed(seed)
        low, high = (bound * self.limit for bound in NEAR_LIMIT)
        near = [arch for arch in (_random_arch(space, gen) for _ in range(_NEAR_POOL))
                if low <= self.ratio(arch) <= high]
        if not near:
            raise UserError(f"No subnetwork of the space is predicted within "
                            f"{NEAR_LIMIT[0]:g}-{NEAR_LIMIT[1]:g} x search.max_latency "
                            f"({self.limit:g}) for supernet.sample = 'near-limit'; raise "
                            f"search.max_latency or use supernet.sample = 'uniform'.")
        return near


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state_dict (names, shapes, values): what the stage starts from,
    whether the dense model was trained here or loaded from the user's checkpoint."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def supernet_key(dense: nn.Module, space: SpaceConfig, options: SupernetConfig,
                 recipe: TrainConfig, data_fingerprint: str, images: int, seed: int,
                 near: NearLimit | None = None) -> str:
    """The cache name of a stage: what it starts from and how it trains. `images` is the count
    it trains on, in place of the prefix options that chose it (a prefix as long as the data,
    or none, is the same stage)."""
    options = options.model_copy(update={"max_train_images": images})
    recipe = recipe.model_copy(update={"max_train_images": images})
    made_of = {"format": FORMAT, "dense": weights_fingerprint(dense),
               "space": space.cache_fields(), "options": options.model_dump(mode="json"),
               "recipe": recipe.cache_fields(), "data": data_fingerprint, "seed": seed}
    if near is not None:  # uniform stages keep the keys they had before near-limit draws
        made_of["near"] = near.cache_fields()
    canonical = json.dumps(made_of, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _sample_of(space: Space, arch: Arch) -> dict[int, list[tuple[int, float]]]:
    """The Supernet sample that runs `arch`'s channels and blocks (full dims left out)."""
    genes = space.encode(arch)
    return {d: [(g, 1.0)] for d, (dim, g) in enumerate(zip(space.dims, genes, strict=True))
            if dim.kind in ("width", "depth") and dim.choices[g] != dim.full}


def _random_arch(space: Space, gen: torch.Generator) -> Arch:
    return space.decode([int(torch.randint(len(d.choices), (1,), generator=gen))
                         for d in space.dims])


def _sandwich_step(net: Supernet, xb: torch.Tensor, yb: torch.Tensor,
                   samples: list[dict[int, list[tuple[int, float]]]],
                   temperature: float, task: Task) -> torch.Tensor:
    """Backpropagate the largest subnetwork's label loss and every other sample's distillation
    loss towards it (a user's task, whose outputs need not be class logits: its own loss on the
    labels), gradients summed; returns the largest's loss."""
    net.sample = {}
    logits = net(xb)
    loss = task.loss(logits, yb)
    loss.backward()
    soft = soft_targets(logits.detach(), temperature) if task.classifies else None
    try:
        for sample in samples:
            net.sample = sample
            out = net(xb)
            (task.loss(out, yb) if soft is None
             else distillation_kl(out, soft, temperature)).backward()
    finally:
        net.sample = {}
    return loss.detach()


def _read_partial(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        needed = {"epoch", "seconds", "model", "optimizer", "scheduler", "generator"}
        if not isinstance(state, dict) or not needed <= state.keys():
            raise ValueError("missing entries")
        return state
    except Exception as err:
        raise UserError(f"The supernet stage's resume file '{path}' cannot be read "
                        f"({load_error_reason(err)}); delete it and the stage starts "
                        f"again from the dense model.") from None


def train_supernet(model: nn.Module, space: Space, data: DatasetSplits, options: SupernetConfig,
                   recipe: TrainConfig, space_cfg: SpaceConfig, *, seed: int,
                   device: torch.device, cache_dir: Path, progress: bool = True,
                   near: NearLimit | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of `model` trained `options.epochs` epochs as a supernet over `space` (from the
    cache when it was trained before), in eval mode, and a JSON-able dict describing it;
    `near`: draw the random subnetworks near a latency limit (supernet.sample)."""
    x, y = training_tensors(data, options.max_train_images or recipe.max_train_images)
    key = supernet_key(model, space_cfg, options, recipe, data.fingerprint(), len(x), seed,
                       near)
    final, partial = cache_dir / f"supernet-{key}.pt", cache_dir / f"supernet-{key}.partial.pt"
    if final.is_file():
        state, meta = read_checkpoint(final, f"Delete '{final}' and the supernet stage runs "
                                             f"again.")
        trained = copy.deepcopy(model)
        trained.load_state_dict(state)
        return trained.to(device).eval(), {**renamed_fields(meta), "checkpoint": str(final),
                                           "cached": True}

    net = Supernet(space, model, space.channel_order(), hard=True).to(device)
    x, y = x.to(device), y.to(device)
    batch_size = max(2, min(recipe.batch_size, len(x)))
    steps = len(x) // batch_size
    if steps == 0:
        raise ModelError(f"the supernet stage needs at least 2 training images, got {len(x)}; "
                         f"raise supernet.max_train_images.")
    distributed.check_batch(batch_size, "The supernet's training batch size")
    span = continued_span(recipe, recipe.epochs, options.epochs)
    if span and options.lr:
        log.warning("supernet.lr (%g) is not used: the stage continues the dense model's "
                    "schedule (model.train.schedule_epochs)", options.lr)
    lr_recipe = recipe.model_copy(update={"lr": recipe.lr if span else options.lr or recipe.lr})
    opt, sched = recipe_optimizer(net.parameters(), lr_recipe, options.epochs * steps, span)
    gen = torch.Generator().manual_seed(seed)
    first_epoch, seconds = 0, 0.0
    if partial.is_file():
        state = _read_partial(partial)
        net.net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        first_epoch, seconds = int(state["epoch"]), float(state["seconds"])
        log.info("supernet stage: resuming after epoch %d of %d", first_epoch, options.epochs)
    smallest = _sample_of(space, space.smallest())
    pool = near.archs(space, seed) if near is not None else None

    def random_sample() -> dict[int, list[tuple[int, float]]]:
        if pool is None:
            return _sample_of(space, _random_arch(space, gen))
        return _sample_of(space, pool[int(torch.randint(len(pool), (1,), generator=gen))])
    net.train()
    with progress_bar(disable=not progress) as bar:
        for epoch in range(first_epoch, options.epochs):
            start = time.perf_counter()
            task = bar.add_task(f"supernet {epoch + 1}/{options.epochs}", total=steps,
                                stats="")
            loss_sum = torch.zeros((), device=device)
            for step, (xb, yb) in enumerate(epoch_batches(x, y, batch_size, gen,
                                                          recipe.augment)):
                samples = [smallest] + [random_sample() for _ in range(options.random_subnets)]
                opt.zero_grad(set_to_none=True)
                loss_sum += _sandwich_step(net, distributed.share(xb), distributed.share(yb),
                                           samples, options.temperature, data.task)
                distributed.average_gradients(net.parameters())  # under torchrun
                opt.step()
                sched.step()
                if (step + 1) % 20 == 0 or step + 1 == steps:
                    bar.update(task, completed=step + 1,
                               stats=f"largest's loss {loss_sum.item() / (step + 1):.4f}")
            mean_loss = loss_sum.item() / steps
            if not math.isfinite(mean_loss):
                raise ModelError(f"supernet training diverged in epoch {epoch + 1} (loss "
                                 f"{mean_loss}); lower supernet.lr.")
            seconds += time.perf_counter() - start
            if distributed.is_main():
                write_torch(partial, {"epoch": epoch + 1, "seconds": seconds,
                                      "model": net.net.state_dict(),
                                      "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(),
                                      "generator": gen.get_state()})
    trained = copy.deepcopy(model)  # the trained weights without the supernet's hooks
    trained.load_state_dict(net.net.state_dict())
    # the running statistics mix every subnetwork's batches: re-estimate the full network's
    # (it is the teacher of fine-tuning and the dense reference; candidates recalibrate anyway)
    recalibrate_batchnorm(trained, list(x[:_CALIBRATION_IMAGES].split(batch_size)))
    meta = {"key": key, "epochs": options.epochs, "seconds": seconds,
            "images_per_epoch": steps * batch_size,
            **({"near_limit_subnets": len(pool)} if pool is not None else {}),
            "options": options.model_dump(mode="json"), **split_scores(trained, data)}
    state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    if distributed.is_main():
        write_torch(final, {"state_dict": state, "meta": meta})
        partial.unlink(missing_ok=True)
    return trained.eval(), {**meta, "checkpoint": str(final), "cached": False}
