"""From proxy front to real models: train chosen front points back to strength.

Each chosen Arch is built as a physically smaller model (its weight masks held fixed while it
trains, the masks found on the inherited weights) and trained with the dense recipe's
schedule, by default from the inherited (sliced) weights the search scored; `init = "dense"`
slices the dense model's own weights instead (a supernet stage then only ranks candidates),
`init = "scratch"` re-initialises the same architecture ("Rethinking the Value of Network
Pruning" baseline), and `kd = true` distils from the network the point was cut from. Test
accuracy is measured after training, never used for choosing. Every finished model is
appended to finetune.csv and its weights saved, so a killed stage resumes with the next model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch import distributed
from prunesearch.config import FinetuneConfig, RunConfig
from prunesearch.data import DatasetSplits
from prunesearch.errors import UserError
from prunesearch.models import Distillation, train_model
from prunesearch.models._layers import init_weights
from prunesearch.models.options import TrainConfig
from prunesearch.models.train import ScheduleSpan, continued_span
from prunesearch.runs.finetuned import read_finetuned, save_trained
from prunesearch.spaces import Arch, layer_densities
from prunesearch.spaces.masks import hold_masks, magnitude_masks, release_masks
from prunesearch.spaces.slicing import Slicer

log = logging.getLogger("prunesearch")

def variant_name(cfg: RunConfig) -> str:
    """The run's main variant: how its front was fine-tuned, or the strategy's name for a
    strategy that trains its own networks."""
    from prunesearch.search.registry import strategy_trains  # the search package imports us

    if strategy_trains(cfg.search.strategy):
        return cfg.search.strategy
    ft = cfg.finetune
    name = f"{ft.init}-{'kd' if ft.kd else 'ce'}-e{epochs_of(cfg)}"
    if finetune_span(cfg):
        name += f"-cont{cfg.model.train.schedule_epochs}"
    elif ft.lr is not None:
        name += f"-lr{ft.lr:g}"
    if ft.max_train_images is not None:
        name += f"-n{ft.max_train_images}"
    return name


def epochs_of(cfg: RunConfig) -> int:
    """finetune.epochs; by default the epochs left of the dense recipe's longer schedule
    (after the dense and supernet epochs), or the dense epochs when it has none."""
    return cfg.finetune.epochs or cfg.schedule_epochs_left() or cfg.model.train.epochs


def finetune_span(cfg: RunConfig) -> ScheduleSpan | None:
    """Where fine-tuning sits on the dense recipe's longer schedule: after the epochs its
    weights have had (None: no such schedule, or `init = "scratch"`, which starts over)."""
    if cfg.finetune.init == "scratch":
        return None
    return continued_span(cfg.model.train, cfg.epochs_before_finetuning(), epochs_of(cfg))


def finetune_recipe(cfg: RunConfig) -> TrainConfig:
    """The dense recipe with the fine-tuning stage's epochs, learning rate and images (the
    dense lr when fine-tuning continues its schedule)."""
    ft, dense = cfg.finetune, cfg.model.train
    lr = dense.lr if finetune_span(cfg) else ft.lr or dense.lr
    return dense.model_copy(update={
        "epochs": epochs_of(cfg), "lr": lr,
        "max_train_images": ft.max_train_images or dense.max_train_images})


def choose_points(front: list[dict[str, Any]], ft: FinetuneConfig) -> list[dict[str, Any]]:
    """Front rows to fine-tune: the best proxy point at or under each cost-ratio target (the
    run's axis: `cost_ratio`), or `top_k` points spread evenly along the front (by cost), or
    the rows of `ids` (then `front` holds those candidates' rows). Distinct, in cost order.
    Targets that all fall below the front are a UserError (there would be nothing to train)."""
    rows = sorted(front, key=lambda r: r["cost_ratio"])
    if not rows:
        return []
    if ft.ids:
        picks = [r for r in rows if r["id"] in ft.ids]
    elif ft.top_k is not None:
        k = min(ft.top_k, len(rows))
        picks = [rows[round(i * (len(rows) - 1) / max(1, k - 1))] for i in range(k)]
    else:
        picks = []
        for target in ft.targets:
            under = [r for r in rows if r["cost_ratio"] <= target]
            if under:
                picks.append(max(under, key=lambda r: (r["val_score"], -r["cost_ratio"])))
        if not picks:
            smallest = rows[0]["cost_ratio"]
            raise UserError(f"finetune.targets {ft.targets} are all below the smallest front "
                            f"point's cost ratio ({smallest:.3f}): nothing to fine-tune. Raise "
                            f"a target to at least {smallest:.3f}, or set finetune.top_k.")
    unique = {r["id"]: r for r in picks}
    return sorted(unique.values(), key=lambda r: r["cost_ratio"])


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """The same architecture with fresh weights (the zoo's init), seeded, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        init_weights(model)
    return model


def finetune_front(cfg: RunConfig, run_dir: Path, front: list[dict[str, Any]],
                   slicer: Slicer, teacher: nn.Module, data: DatasetSplits,
                   device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """Fine-tune the chosen points of `front` (rows of pareto.json) that this variant has not
    finished yet; returns this variant's rows, old and new (under torchrun, only the first
    process writes and returns the new ones)."""
    ft, variant = cfg.finetune, variant_name(cfg)
    done = {r["id"]: r for r in read_finetuned(run_dir) if r["variant"] == variant}
    recipe, span = finetune_recipe(cfg), finetune_span(cfg)
    if span and ft.lr:
        log.warning("finetune.lr (%g) is not used: fine-tuning continues the dense model's "
                    "schedule (model.train.schedule_epochs)", ft.lr)
    rows = []
    for point in choose_points(front, ft):
        if point["id"] in done:
            rows.append(done[point["id"]])
            continue
        student = slicer.build(Arch.from_dict(point["arch"]))
        masks = magnitude_masks(student, layer_densities(point["arch"]))  # found on inherited
        if ft.init == "scratch":
            reinitialise(student, cfg.seed + point["id"])
        hold_masks(student, masks)
        distill = Distillation(teacher, ft.temperature, ft.alpha) if ft.kd else None
        log.info("fine-tuning #%d (%.3f of dense MACs), %s", point["id"], point["macs_ratio"],
                 variant)
        report = train_model(student, data, recipe, seed=cfg.seed, device=device,
                             progress=progress, distill=distill, span=span,
                             label=f"fine-tune #{point['id']} ({point['macs_ratio']:.2f} MACs)")
        release_masks(student)
        if not distributed.is_main():  # under torchrun the first process writes
            continue
        row = save_trained(run_dir, student, point, variant, ft.init, ft.kd, recipe.epochs,
                           report.val_score, report.test_score, report.seconds)
        log.info("fine-tuned #%d: test score %.4f in %.0f s", point["id"], report.test_score,
                 report.seconds)
        rows.append(row)
    return rows
