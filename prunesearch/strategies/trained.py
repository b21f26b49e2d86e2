"""Baselines that train their own sparse networks: `random-masks`, `imp` and `bip`.

Their networks carry their own weights and masks, so unlike weight-sharing candidates they are
not identified by an Arch alone. Each finished network is one evaluation: it is recorded in the
run's archive (its arch is the nearest point of the density grid, its MACs/params the EXACT
sparse costs of its masks, its val_score measured on the evaluator's validation subset like every
proxy), and saved as variant `<strategy>` in finetune.csv and finetuned/<strategy>/<id>.pt with
its test accuracy, cumulative training epochs and wall time, so cost/accuracy compare directly
and the plot shows it beside fine-tuned points. Training runs without a progress bar (the
search bar is live); each finished network is logged.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from prunesearch.evaluators import Result
from prunesearch.options import Options
from prunesearch.spaces.masks import (
    apply_masks,
    erk_densities,
    global_magnitude_densities,
    hold_masks,
    kept_weights,
    magnitude_masks,
    random_masks,
    release_masks,
)
from prunesearch.strategies.base import SearchContext, TrainingKit, TrainingStrategy
from prunesearch.strategies.global_magnitude import MaskTargetOptions, require_density_space
from prunesearch.strategies.registry import register_strategy
from prunesearch.training import train_model
from prunesearch.training.loop import epoch_batches, recipe_optimizer, training_tensors

log = logging.getLogger("prunesearch")
DEFAULT_TARGETS = (0.5, 0.2, 0.1)  # overall weight densities, one network each


class TrainedOptions(Options):
    epochs: int | None = Field(None, ge=1, description="training epochs per network or round "
                               "(default: model.train.epochs)")


class RandomMasksOptions(TrainedOptions, MaskTargetOptions):
    distribution: Literal["uniform", "erk"] = "uniform"


class ImpOptions(TrainedOptions):
    min_density: float = Field(0.0, ge=0, lt=1, description="per-layer floor")
    prune_fraction: float = Field(0.2, gt=0, lt=1, description="of remaining, per round")
    rewind_steps: int = Field(200, ge=0, description="optimizer steps of the checkpoint every "
                              "round rewinds to")
    rounds: int | None = Field(None, ge=1, description="pruning rounds after the dense one "
                               "(default: as many as the budget allows)")


class BipOptions(TrainedOptions, MaskTargetOptions):
    gamma: float = Field(1.0, gt=0, description="lower-level strong-convexity weight")
    score_lr: float = Field(0.01, gt=0, description="Adam step on the mask scores (scores "
                            "start at |weight| / std of the layer)")


def train_masked(model: nn.Module, masks: dict[str, torch.Tensor], kit: TrainingKit,
                 epochs: int, seed: int, on_step: Callable[[int], None] | None = None) -> float:
    """Train with `masks` held (pruned weights stay zero); returns the wall seconds."""
    hold_masks(model, masks)
    report = train_model(model, kit.data, kit.recipe.model_copy(update={"epochs": epochs}),
                         seed=seed, device=kit.device, progress=False, on_step=on_step)
    release_masks(model)
    return report.seconds


def rewind(model: nn.Module, state: dict[str, torch.Tensor],
           masks: dict[str, torch.Tensor]) -> None:
    """IMP's rewinding: every weight and buffer back to the saved checkpoint, then masked."""
    model.load_state_dict(state)
    apply_masks(model, masks)


def mask_densities(model: nn.Module, layers: list[str]) -> dict[str, float]:
    """The exact density of each masked layer (its non-zero weights)."""
    modules = dict(model.named_modules())
    return {n: int(torch.count_nonzero(modules[n].weight)) / modules[n].weight.numel()
            for n in layers}


class TrainedStrategy(TrainingStrategy):
    # Weight masks leave dense kernels as slow as before: a latency objective or limit says
    # nothing about them (and their networks are recorded, never refused by a limit).
    axes = ("macs", "params")
    options: TrainedOptions

    def epochs(self, kit: TrainingKit) -> int:
        return self.options.epochs or kit.recipe.epochs

    def done_count(self, ctx: SearchContext) -> int:
        """Networks of this strategy already finished (a resumed run skips them)."""
        return ctx.env.trained.count(self.name)

    def finish(self, ctx: SearchContext, model: nn.Module, layers: list[str], init: str,
               epochs: int, seconds: float) -> Result:
        """Submit a trained network as one evaluation and save it in finetune.csv."""
        kit = ctx.training
        model.eval()
        densities = mask_densities(model, layers)
        macs, params = ctx.space.masked_costs(densities)
        val_score = kit.data.task.score(model, kit.val_x, kit.val_y)
        result = Result(ctx.space.with_densities(densities), macs, params, val_score, seconds)
        point = {"id": ctx.n_evals, "macs": macs, "params": params,
                 "macs_ratio": macs / ctx.space.dense_macs, "val_score": val_score}
        ctx.submit(result)
        full_val = kit.data.task.score(model, kit.data.val_x, kit.data.val_y)
        test = kit.data.task.score(model, kit.data.test_x, kit.data.test_y)
        ctx.env.trained.save(model.cpu(), point, self.name, init, epochs, full_val, test,
                             seconds)
        model.to(kit.device)
        log.info("%s #%d: weight density %.4f, %.3f of dense MACs, val %.4f, test %.4f, "
                 "%d epochs, %.0f s", self.name, point["id"],
                 sum(densities[n] * ctx.space.layer_weights[n] for n in layers)
                 / sum(ctx.space.layer_weights[n] for n in layers),
                 point["macs_ratio"], val_score, test, epochs, seconds)
        return result

    def pending_targets(self, ctx: SearchContext) -> Iterator[tuple[int, float]]:
        """(index, density) of the target densities not finished yet, while budget lasts."""
        done = self.done_count(ctx)
        for i, density in enumerate(self.options.densities or DEFAULT_TARGETS):
            if ctx.done():
                return
            if i >= done:
                yield i, density


@register_strategy("random-masks", options=RandomMasksOptions)
class RandomMasksStrategy(TrainedStrategy):
    """Random pruning ("The Unreasonable Effectiveness of Random Pruning"): per target density,
    layer densities uniform or ERK, weights kept uniformly at random, trained from scratch."""

    def train(self, ctx: SearchContext, kit: TrainingKit) -> None:
        layers = require_density_space(ctx, self.name)
        for i, density in self.pending_targets(ctx):
            model = kit.fresh_model(ctx.seed + i)
            rule = erk_densities if self.options.distribution == "erk" else (
                lambda _m, ls, d: dict.fromkeys(ls, d))
            masks = random_masks(model, rule(model, layers, density),
                                 torch.Generator().manual_seed(ctx.seed + i))
            apply_masks(model, masks)
            seconds = train_masked(model, masks, kit, self.epochs(kit), ctx.seed + i)
            self.finish(ctx, model, layers, f"scratch-{self.options.distribution}",
                        self.epochs(kit), seconds)


@register_strategy("imp", options=ImpOptions)
class ImpStrategy(TrainedStrategy):
    """Iterative magnitude pruning with rewinding (lottery tickets, "Stabilizing the Lottery
    Ticket Hypothesis"): train the dense network from a seeded init, saving the weights after
    `rewind_steps` steps; then each round prunes `prune_fraction` of the remaining weights by
    one global magnitude threshold, rewinds the survivors to the saved weights and retrains
    the full schedule. Round 0 (dense) and every round are front points; the cost of a round
    counts every epoch before it. State is saved per round (imp_state.pt) to resume."""

    STATE = "imp_state"

    def train(self, ctx: SearchContext, kit: TrainingKit) -> None:
        layers = require_density_space(ctx, self.name)
        epochs = self.epochs(kit)
        model = kit.fresh_model(ctx.seed)
        state = ctx.load_state(self.STATE)
        if state is not None:
            model.load_state_dict(state["model"])
            masks = state["masks"]
        else:
            state = {"rewind": copy.deepcopy(model.state_dict()), "round": 0, "seconds": 0.0}
            masks = {}

            def snapshot(step: int) -> None:
                if step == self.options.rewind_steps:
                    state["rewind"] = {k: v.detach().cpu().clone()
                                       for k, v in model.state_dict().items()}

            state["seconds"] = train_masked(model, masks, kit, epochs, ctx.seed, snapshot)
            self._save(ctx, model, masks, state)
            self.finish(ctx, model, layers, "dense", epochs, state["seconds"])
        model.to(kit.device)
        rounds = self.options.rounds
        while not ctx.done() and (rounds is None or state["round"] < rounds):
            r = state["round"] + 1
            overall = (1 - self.options.prune_fraction) ** r
            densities = global_magnitude_densities(model, layers, overall,
                                                   self.options.min_density)
            masks = magnitude_masks(model, densities)
            rewind(model, {k: v.to(kit.device) for k, v in state["rewind"].items()}, masks)
            state["seconds"] += train_masked(model, masks, kit, epochs, ctx.seed + r)
            state["round"] = r
            self._save(ctx, model, masks, state)
            self.finish(ctx, model, layers, f"rewind-{self.options.rewind_steps}",
                        epochs * (r + 1), state["seconds"])

    def _save(self, ctx: SearchContext, model: nn.Module, masks: dict[str, torch.Tensor],
              state: dict) -> None:
        ctx.save_state(self.STATE, {
            **state, "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "masks": {k: v.cpu() for k, v in masks.items()}})


@register_strategy("bip", options=BipOptions)
class BipStrategy(TrainedStrategy):
    """BiP ("Advancing Model Pruning via Bi-level Optimization"), one run per target density,
    from the dense trained weights. Mask m = per-layer top-k of scores s (k from the target
    density, same in every layer), z = m * theta. Each step on one batch, with g = dLoss/dz:
    lower level theta <- SGD step with gradient m * g (the dense recipe: momentum, weight decay,
    cosine lr); upper level s <- Adam step with the implicit gradient
    theta * g - (1 / gamma) * m * g * g: the first term is dLoss/dm, the second the bi-linear
    term -(1/gamma) * d2Loss/dm dtheta * dLoss/dtheta with the cross-Hessian taken as diag(g)
    (BiP's approximation for losses of m * theta). Scores start at |theta| / std per layer
    (the first mask is the magnitude one); Adam on the scores is our choice, so `score_lr`
    is a step in those normalized units."""

    def train(self, ctx: SearchContext, kit: TrainingKit) -> None:
        layers = require_density_space(ctx, self.name)
        for i, density in self.pending_targets(ctx):
            model = copy.deepcopy(ctx.model).to(kit.device)
            start = time.perf_counter()
            masks = self._train(model, layers, density, kit, ctx.seed + i)
            apply_masks(model, masks)
            self.finish(ctx, model, layers, "dense-bilevel", self.epochs(kit),
                        time.perf_counter() - start)

    def _train(self, model: nn.Module, layers: list[str], density: float, kit: TrainingKit,
               seed: int) -> dict[str, torch.Tensor]:
        modules = dict(model.named_modules())
        weights = {n: modules[n].weight for n in layers}
        scores = {n: (w.detach().abs() / w.detach().std()).clone().requires_grad_(True)
                  for n, w in weights.items()}
        keep = {n: kept_weights(w.numel(), density) for n, w in weights.items()}

        def masks_now() -> dict[str, torch.Tensor]:
            out = {}
            for n, s in scores.items():
                m = torch.zeros(s.numel(), device=s.device)
                m[torch.topk(s.flatten(), keep[n], sorted=False).indices] = 1.0
                out[n] = m.view_as(s)
            return out

        recipe = kit.recipe
        x, y = training_tensors(kit.data, recipe.max_train_images, kit.device)
        batch = min(recipe.batch_size, len(x))
        steps = len(x) // batch
        epochs = self.epochs(kit)
        opt, sched = recipe_optimizer(model.parameters(), recipe, epochs * steps)
        score_opt = torch.optim.Adam(list(scores.values()), lr=self.options.score_lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for xb, yb in epoch_batches(x, y, batch, gen, recipe.augment):
                masks = masks_now()
                z = {f"{n}.weight": (masks[n] * w).detach().requires_grad_(True)
                     for n, w in weights.items()}
                loss = kit.data.task.loss(functional_call(model, z, (xb,)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    for n, w in weights.items():
                        g = z[f"{n}.weight"].grad
                        w.grad = masks[n] * g
                        scores[n].grad = w * g - masks[n] * g * g / self.options.gamma
                opt.step()
                sched.step()
                score_opt.step()
        model.eval()
        return {n: m.bool() for n, m in masks_now().items()}
