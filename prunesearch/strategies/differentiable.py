"""The loop both differentiable strategies share (TAS, DASS): a relaxation of the space is
trained with weights and architecture parameters updated alternately on the two halves of
the training split, under TAS's cost loss, one search per target (ratios of the dense model's
MACs, or of its predicted latency when the run's search.objective is latency and the
relaxation can price it: `Relaxation.expected_cost`).

Per step: weights take the dense recipe's SGD step on cross-entropy on half A; architecture
parameters take an Adam step on cross-entropy on half B plus `macs_weight` times
-log(E[MACs ratio]) when the argmax architecture is below target - tolerance, +log(E[MACs
ratio]) when above target + tolerance, zero inside. The temperature anneals geometrically from
`tau_max` to `tau_min` over the epochs. After each epoch the argmax architecture, expected
MACs and per-dimension entropy are recorded; the final architecture is the last epoch's argmax
inside the band (else the argmax nearest the target). It is evaluated and recorded in the
archive and fine-tuned by the fine-tuning stage (distillation from the dense model); the search
weights are discarded. State is saved after every epoch (<name>_state.pt) and a killed run
resumes from the last finished epoch; the history goes to <name>_history.json and the plot of
the argmax choices to <name>_dimensions.png.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from prunesearch.errors import ConfigError
from prunesearch.objective import CostAxis
from prunesearch.options import Options
from prunesearch.spaces import Arch, Space
from prunesearch.strategies.base import SearchContext, Strategy
from prunesearch.strategies.history_plot import plot_dimension_history
from prunesearch.training.loop import epoch_batches, recipe_optimizer, training_tensors

log = logging.getLogger("prunesearch")


class DifferentiableOptions(Options):
    """Options shared by the differentiable strategies (tas, dass)."""

    targets: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                 description="ratios of the dense model's MACs (tas with "
                                 "search.objective = latency: its predicted latency): one "
                                 "search each")
    epochs: int = Field(3, ge=1)
    tolerance: float = Field(0.05, gt=0, lt=1, description="band around each target")
    macs_weight: float = Field(2.0, ge=0, description="weight of the MACs loss")
    arch_lr: float = Field(1e-2, gt=0, description="Adam on the architecture logits")
    arch_weight_decay: float = Field(1e-3, ge=0)
    tau_max: float = Field(10.0, gt=0)
    tau_min: float = Field(0.1, gt=0)
    max_train_images: int | None = Field(None, ge=2, description="search on a prefix "
                                         "(default: model.train.max_train_images)")

    @field_validator("targets")
    @classmethod
    def _targets_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < t <= 1 for t in v):
            raise ValueError("targets must be a non-empty list of cost ratios in (0, 1]")
        return sorted(set(v))


def macs_loss(expected_ratio: torch.Tensor, argmax_ratio: float, target: float,
              tolerance: float) -> torch.Tensor:
    """TAS's resource loss: push the argmax architecture into [target - tol, target + tol]."""
    if argmax_ratio > target + tolerance:
        return torch.log(expected_ratio)
    if argmax_ratio < target - tolerance:
        return -torch.log(expected_ratio)
    return expected_ratio * 0


def entropy(p: torch.Tensor) -> float:
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum())


class Relaxation(nn.Module, ABC):
    """A continuous relaxation of some dimensions of a space around the dense model."""

    def __init__(self, space: Space, dims: list[int], seed: int) -> None:
        super().__init__()
        self.space = space
        self.dims = dims
        gen = torch.Generator().manual_seed(seed)
        # near-uniform start; tiny seeded noise breaks the argmax's ties
        self.alphas = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(len(space.dims[d].choices), generator=gen))
            for d in dims)

    def weight_parameters(self) -> list[nn.Parameter]:
        alphas = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in alphas]

    def probs(self) -> dict[int, torch.Tensor]:
        return {d: F.softmax(a, dim=0) for d, a in zip(self.dims, self.alphas, strict=True)}

    def argmax(self) -> Arch:
        genes = [len(dim.choices) - 1 for dim in self.space.dims]
        for d, a in zip(self.dims, self.alphas, strict=True):
            genes[d] = int(torch.argmax(a.detach()))
        return self.space.decode(genes)

    @abstractmethod
    def expected_macs(self) -> torch.Tensor:
        """E[MACs] under the current distributions (differentiable in them)."""

    def expected_cost(self, axis: CostAxis) -> torch.Tensor:
        """E[cost] / dense cost on the run's axis (differentiable): MACs, or the expected
        latency the axis's table gives for the current distributions."""
        if axis.name == "macs":
            return self.expected_macs() / self.space.dense_macs
        if axis.expected is None:
            raise ValueError(f"the {axis.label} axis has no differentiable expectation")
        return axis.expected({d: p.cpu() for d, p in self.probs().items()}) / axis.dense

    @abstractmethod
    def forward(self, x: torch.Tensor, tau: float, gen: torch.Generator,
                arch_step: bool) -> torch.Tensor:
        """Logits of the relaxed network; architecture gradients only when `arch_step`."""


class DifferentiableStrategy(Strategy):
    needs_training = True
    kinds: tuple[str, ...] = ()
    axes = ("macs",)  # the band loss is on expected MACs

    options: DifferentiableOptions

    space_hint = "keep space.width_ratios with more than one choice, or space.depth = true."

    @abstractmethod
    def relax(self, ctx: SearchContext, dims: list[int], seed: int) -> Relaxation:
        """The relaxation this strategy trains, around ctx.model."""

    def _files(self) -> tuple[str, str, str]:
        """Resume state of the target in progress, history per target (state), plot."""
        return f"{self.name}_state", f"{self.name}_history", f"{self.name}_dimensions.png"

    def search(self, ctx: SearchContext) -> None:
        dims = [d for d, dim in enumerate(ctx.space.dims) if dim.kind in self.kinds]
        if ctx.training is None or ctx.model is None:
            raise ConfigError(f"search.strategy = '{self.name}' trains the dense model: give its "
                              f"SearchContext `model` and `training` (prunesearch run does).")
        if not dims:
            raise ConfigError(f"search.strategy = '{self.name}' searches "
                              f"{' or '.join(self.kinds)} dimensions and this run's space has "
                              f"none: {self.space_hint}")
        history = ctx.load_state(self._files()[1]) or {}
        for i, target in enumerate(self.options.targets):
            if ctx.done():
                break
            done = history.get(str(target), {}).get("final")
            arch = (Arch.from_dict(done) if done is not None
                    else self._search_one(ctx, dims, target, ctx.seed + i, history))
            ctx.evaluate([arch])

    def _search_one(self, ctx: SearchContext, dims: list[int], target: float, seed: int,
                    history: dict[str, Any]) -> Arch:
        cfg, kit, space = self.options, ctx.training, ctx.space
        state_name, history_name, plot_file = self._files()
        relaxed = self.relax(ctx, dims, seed).to(kit.device)
        recipe = kit.recipe
        x, y = training_tensors(kit.data, cfg.max_train_images or recipe.max_train_images)
        gen = torch.Generator().manual_seed(seed)
        halves = torch.randperm(len(x), generator=gen).to(x.device)
        xa, ya = x[halves[: len(x) // 2]], y[halves[: len(x) // 2]]
        xb, yb = x[halves[len(x) // 2:]], y[halves[len(x) // 2:]]
        batch = min(recipe.batch_size, len(xa))
        steps = len(xa) // batch
        opt, sched = recipe_optimizer(relaxed.weight_parameters(), recipe, cfg.epochs * steps)
        arch_opt = torch.optim.Adam(relaxed.alphas.parameters(), lr=cfg.arch_lr,
                                    betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
        record: dict[str, Any] = {"epochs": [], "final": None,
                                  "dims": [space.dims[d].name for d in dims]}
        start_epoch = 0
        saved = ctx.load_state(state_name)
        if saved is not None and saved["target"] == target:
            relaxed.load_state_dict(saved["relaxed"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
            arch_opt.load_state_dict(saved["arch_opt"])
            gen.set_state(saved["gen"])
            record, start_epoch = saved["record"], saved["epoch"]
        axis = ctx.axis
        for epoch in range(start_epoch, cfg.epochs):
            tau = cfg.tau_max * (cfg.tau_min / cfg.tau_max) ** (epoch / max(1, cfg.epochs - 1))
            task = (ctx.progress.add_task(f"{self.name} {target:.2f} epoch {epoch + 1}/"
                                          f"{cfg.epochs}", total=steps, status="")
                    if ctx.progress is not None else None)
            batches_a = epoch_batches(xa, ya, batch, gen, recipe.augment)
            order_b = torch.randint(0, len(xb), (steps * batch,), generator=gen).to(x.device)
            relaxed.train()
            for step, (bx_a, by_a) in enumerate(batches_a):
                ib = order_b[step * batch:(step + 1) * batch]
                loss_w = kit.data.task.loss(relaxed(bx_a, tau, gen, arch_step=False), by_a)
                opt.zero_grad(set_to_none=True)
                loss_w.backward()
                opt.step()
                sched.step()
                ratio = relaxed.expected_cost(axis)
                argmax_ratio = axis.arch_ratio(relaxed.argmax())
                loss_a = kit.data.task.loss(relaxed(xb[ib], tau, gen, arch_step=True),
                                            yb[ib]) + \
                    cfg.macs_weight * macs_loss(ratio, argmax_ratio, target, cfg.tolerance)
                # gradients for the logits only: the weights' would be thrown away
                alphas = list(relaxed.alphas)
                grads = torch.autograd.grad(loss_a, alphas, allow_unused=True)
                for a, g in zip(alphas, grads, strict=True):
                    a.grad = g
                arch_opt.step()
                if task is not None and ((step + 1) % 20 == 0 or step + 1 == steps):
                    ctx.progress.update(task, completed=step + 1, status=(
                        f"loss {loss_w.item():.3f}  E[{axis.name}] {ratio.item():.3f}  argmax "
                        f"{argmax_ratio:.3f}  tau {tau:.2f}"))
            record["epochs"].append(self._epoch_record(relaxed, axis, epoch, tau, loss_w.item(),
                                                       target))
            e = record["epochs"][-1]
            log.info("%s target %.2f epoch %d/%d: argmax %.3f of dense %s, expected %.3f, "
                     "tau %.2f, weight loss %.3f", self.name, target, epoch + 1, cfg.epochs,
                     e["argmax_ratio"], axis.label, e["expected_ratio"], tau, loss_w.item())
            ctx.save_state(state_name, {
                "target": target, "epoch": epoch + 1, "relaxed": relaxed.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict(),
                "arch_opt": arch_opt.state_dict(), "gen": gen.get_state(), "record": record})
        inside = [e for e in record["epochs"] if e["in_band"]]
        final = inside[-1] if inside else min(
            record["epochs"], key=lambda e: abs(e["argmax_ratio"] - target))
        record["final"] = final["arch"]
        history[str(target)] = record
        ctx.save_state(history_name, history)
        plot_dimension_history(history, space, ctx.output_path(plot_file))
        ctx.clear_state(state_name)
        return Arch.from_dict(final["arch"])

    def _epoch_record(self, relaxed: Relaxation, axis: CostAxis, epoch: int, tau: float,
                      loss: float, target: float) -> dict[str, Any]:
        space = relaxed.space
        arch = relaxed.argmax()
        ratio = axis.arch_ratio(arch)
        with torch.no_grad():
            probs = relaxed.probs()
            expected = float(relaxed.expected_cost(axis))
        return {"epoch": epoch + 1, "tau": tau, "weight_loss": loss, "cost": axis.name,
                "expected_ratio": expected, "argmax_ratio": ratio,
                "arch": arch.to_dict(),
                "entropy": {space.dims[d].name: entropy(p) for d, p in probs.items()},
                "in_band": abs(ratio - target) <= self.options.tolerance}
