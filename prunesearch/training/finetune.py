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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.data import DatasetSplits
from prunesearch.errors import UserError
from prunesearch.front import FrontPoint
from prunesearch.models._layers import init_weights
from prunesearch.models.options import TrainConfig
from prunesearch.runs.finetuned import read_finetuned, save_trained
from prunesearch.spaces import layer_densities
from prunesearch.spaces.masks import hold_masks, magnitude_masks, release_masks
from prunesearch.spaces.slicing import Slicer
from prunesearch.training import Distillation, distributed, train_model
from prunesearch.training.loop import ScheduleSpan
from prunesearch.training.options import FinetuneConfig

log = logging.getLogger("prunesearch")

def choose_points(front: list[FrontPoint], ft: FinetuneConfig) -> list[FrontPoint]:
    """Front points to fine-tune: the best proxy point at or under each cost-ratio target (the
    run's axis: `cost_ratio`), or `top_k` points spread evenly along the front (by cost), or
    the points of `ids` (then `front` holds those candidates). Distinct, in cost order.
    Targets that all fall below the front are a UserError (there would be nothing to train)."""
    points = sorted(front, key=lambda p: p.cost_ratio)
    if not points:
        return []
    if ft.ids:
        picks = [p for p in points if p.id in ft.ids]
    elif ft.top_k is not None:
        k = min(ft.top_k, len(points))
        picks = [points[round(i * (len(points) - 1) / max(1, k - 1))] for i in range(k)]
    else:
        picks = []
        for target in ft.targets:
            under = [p for p in points if p.cost_ratio <= target]
            if under:
                picks.append(max(under, key=lambda p: (p.val_score, -p.cost_ratio)))
        if not picks:
            smallest = points[0].cost_ratio
            raise UserError(f"finetune.targets {ft.targets} are all below the smallest front "
                            f"point's cost ratio ({smallest:.3f}): nothing to fine-tune. Raise "
                            f"a target to at least {smallest:.3f}, or set finetune.top_k.")
    unique = {p.id: p for p in picks}
    return sorted(unique.values(), key=lambda p: p.cost_ratio)


@dataclass(frozen=True)
class FinetunePlan:
    """How the chosen points train: the `[finetune]` options, the variant's name (finetune.csv
    keeps each variant apart), the recipe (the dense one with the stage's epochs, lr and
    images), where the stage sits on the dense schedule (None: its own cosine), the seed."""

    options: FinetuneConfig
    variant: str
    recipe: TrainConfig
    span: ScheduleSpan | None
    seed: int


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """The same architecture with fresh weights (the zoo's init), seeded, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        init_weights(model)
    return model


def finetune_front(plan: FinetunePlan, run_dir: Path, front: list[FrontPoint],
                   slicer: Slicer, teacher: nn.Module, data: DatasetSplits,
                   device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """Fine-tune the chosen points of `front` that this variant has not finished yet; returns
    this variant's rows of finetune.csv, old and new (under torchrun, only the first process
    writes and returns the new ones)."""
    ft, variant, recipe, span = plan.options, plan.variant, plan.recipe, plan.span
    done = {r["id"]: r for r in read_finetuned(run_dir) if r["variant"] == variant}
    if span and ft.lr:
        log.warning("finetune.lr (%g) is not used: fine-tuning continues the dense model's "
                    "schedule (model.train.schedule_epochs)", ft.lr)
    rows = []
    for point in choose_points(front, ft):
        if point.id in done:
            rows.append(done[point.id])
            continue
        student = slicer.build(point.arch)
        masks = magnitude_masks(student, layer_densities(point.arch.to_dict()))  # inherited
        if ft.init == "scratch":
            reinitialise(student, plan.seed + point.id)
        hold_masks(student, masks)
        distill = Distillation(teacher, ft.temperature, ft.alpha) if ft.kd else None
        log.info("fine-tuning #%d (%.3f of dense MACs), %s", point.id, point.macs_ratio,
                 variant)
        report = train_model(student, data, recipe, seed=plan.seed, device=device,
                             progress=progress, distill=distill, span=span,
                             label=f"fine-tune #{point.id} ({point.macs_ratio:.2f} MACs)")
        release_masks(student)
        if not distributed.is_main():  # under torchrun the first process writes
            continue
        row = save_trained(run_dir, student, point.row(), variant, ft.init, ft.kd,
                           recipe.epochs, report.val_score, report.test_score, report.seconds)
        log.info("fine-tuned #%d: test score %.4f in %.0f s", point.id, report.test_score,
                 report.seconds)
        rows.append(row)
    return rows
