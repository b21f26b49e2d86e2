"""The loop both differentiable strategies share (TAS, DASS): a relaxation of the space is
trained with weights and architecture parameters updated alternately on the two halves of
the training split, under TAS's MACs loss, one search per MACs target.

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

import io
import json
import logging
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.config import DifferentiableConfig
from prunesearch.errors import ConfigError
from prunesearch.models.train import random_translate, recipe_optimizer
from prunesearch.runs.files import write_atomic, write_json
from prunesearch.runs.plots import plot_dimension_history
from prunesearch.search.base import SearchContext, Strategy
from prunesearch.spaces import Arch, Space

log = logging.getLogger("prunesearch")


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

    @abstractmethod
    def forward(self, x: torch.Tensor, tau: float, gen: torch.Generator,
                arch_step: bool) -> torch.Tensor:
        """Logits of the relaxed network; architecture gradients only when `arch_step`."""


class DifferentiableStrategy(Strategy):
    needs_training = True
    kinds: tuple[str, ...] = ()

    def __init__(self, cfg: DifferentiableConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def relax(self, ctx: SearchContext, dims: list[int], seed: int) -> Relaxation:
        """The relaxation this strategy trains, around ctx.model."""

    def _files(self) -> tuple[str, str, str]:
        return (f"{self.name}_state.pt", f"{self.name}_history.json",
                f"{self.name}_dimensions.png")

    def search(self, ctx: SearchContext) -> None:
        dims = [d for d, dim in enumerate(ctx.space.dims) if dim.kind in self.kinds]
        if not dims or ctx.training is None or ctx.model is None:
            raise ConfigError(f"search.strategy = '{self.name}' needs {' or '.join(self.kinds)} "
                              f"dimensions in the space (see space.width_ratios, space.depth, "
                              f"space.densities) and the training data; run it through "
                              f"`prunesearch run`.")
        path = ctx.run_dir / self._files()[1]
        history = json.loads(path.read_text()) if path.exists() else {}
        for i, target in enumerate(self.cfg.targets):
            if ctx.done():
                break
            done = history.get(str(target), {}).get("final")
            arch = (Arch.from_dict(done) if done is not None
                    else self._search_one(ctx, dims, target, ctx.seed + i, history))
            ctx.evaluate([arch])

    def _search_one(self, ctx: SearchContext, dims: list[int], target: float, seed: int,
                    history: dict[str, Any]) -> Arch:
        cfg, kit, space = self.cfg, ctx.training, ctx.space
        state_file, history_file, plot_file = (ctx.run_dir / f for f in self._files())
        relaxed = self.relax(ctx, dims, seed).to(kit.device)
        x, y = kit.data.train_x, kit.data.train_y
        if cfg.max_train_images is not None:
            x, y = x[:cfg.max_train_images], y[:cfg.max_train_images]
        gen = torch.Generator().manual_seed(seed)
        halves = torch.randperm(len(x), generator=gen).to(x.device)
        xa, ya = x[halves[: len(x) // 2]], y[halves[: len(x) // 2]]
        xb, yb = x[halves[len(x) // 2:]], y[halves[len(x) // 2:]]
        recipe = kit.recipe
        batch = min(recipe.batch_size, len(xa))
        steps = len(xa) // batch
        opt, sched = recipe_optimizer(relaxed.weight_parameters(), recipe, cfg.epochs * steps)
        arch_opt = torch.optim.Adam(relaxed.alphas.parameters(), lr=cfg.arch_lr,
                                    betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
        record: dict[str, Any] = {"epochs": [], "final": None,
                                  "dims": [space.dims[d].name for d in dims]}
        start_epoch = 0
        if state_file.exists():
            saved = torch.load(state_file, map_location="cpu", weights_only=False)
            if saved["target"] == target:
                relaxed.load_state_dict(saved["relaxed"])
                opt.load_state_dict(saved["opt"])
                sched.load_state_dict(saved["sched"])
                arch_opt.load_state_dict(saved["arch_opt"])
                gen.set_state(saved["gen"])
                record, start_epoch = saved["record"], saved["epoch"]
        dense = space.dense_macs
        augment = recipe.augment and x.dim() == 4
        for epoch in range(start_epoch, cfg.epochs):
            tau = cfg.tau_max * (cfg.tau_min / cfg.tau_max) ** (epoch / max(1, cfg.epochs - 1))
            task = (ctx.progress.add_task(f"{self.name} {target:.2f} epoch {epoch + 1}/"
                                          f"{cfg.epochs}", total=steps, status="")
                    if ctx.progress is not None else None)
            order_a = torch.randperm(len(xa), generator=gen).to(x.device)
            order_b = torch.randint(0, len(xb), (steps * batch,), generator=gen).to(x.device)
            relaxed.train()
            for step in range(steps):
                ia = order_a[step * batch:(step + 1) * batch]
                ib = order_b[step * batch:(step + 1) * batch]
                bx_a = random_translate(xa[ia], gen) if augment else xa[ia]
                loss_w = F.cross_entropy(relaxed(bx_a, tau, gen, arch_step=False), ya[ia])
                opt.zero_grad(set_to_none=True)
                loss_w.backward()
                opt.step()
                sched.step()
                ratio = relaxed.expected_macs() / dense
                argmax_ratio = space.macs(relaxed.argmax()) / dense
                loss_a = F.cross_entropy(relaxed(xb[ib], tau, gen, arch_step=True), yb[ib]) + \
                    cfg.macs_weight * macs_loss(ratio, argmax_ratio, target, cfg.tolerance)
                # gradients for the logits only: the weights' would be thrown away
                alphas = list(relaxed.alphas)
                grads = torch.autograd.grad(loss_a, alphas, allow_unused=True)
                for a, g in zip(alphas, grads, strict=True):
                    a.grad = g
                arch_opt.step()
                if task is not None and ((step + 1) % 20 == 0 or step + 1 == steps):
                    ctx.progress.update(task, completed=step + 1, status=(
                        f"loss {loss_w.item():.3f}  E[MACs] {ratio.item():.3f}  argmax "
                        f"{argmax_ratio:.3f}  tau {tau:.2f}"))
            record["epochs"].append(self._epoch_record(relaxed, epoch, tau, loss_w.item(),
                                                       target))
            e = record["epochs"][-1]
            log.info("%s target %.2f epoch %d/%d: argmax %.3f of dense MACs, E[MACs] %.3f, "
                     "tau %.2f, weight loss %.3f", self.name, target, epoch + 1, cfg.epochs,
                     e["argmax_macs_ratio"], e["expected_macs_ratio"], tau, loss_w.item())
            buf = io.BytesIO()
            torch.save({"target": target, "epoch": epoch + 1, "relaxed": relaxed.state_dict(),
                        "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "arch_opt": arch_opt.state_dict(), "gen": gen.get_state(),
                        "record": record}, buf)
            write_atomic(state_file, buf.getvalue())
        inside = [e for e in record["epochs"] if e["in_band"]]
        final = inside[-1] if inside else min(
            record["epochs"], key=lambda e: abs(e["argmax_macs_ratio"] - target))
        record["final"] = final["arch"]
        history[str(target)] = record
        write_json(history_file, history)
        plot_dimension_history(history, space, plot_file)
        state_file.unlink(missing_ok=True)
        return Arch.from_dict(final["arch"])

    def _epoch_record(self, relaxed: Relaxation, epoch: int, tau: float, loss: float,
                      target: float) -> dict[str, Any]:
        space, dense = relaxed.space, relaxed.space.dense_macs
        arch = relaxed.argmax()
        ratio = space.macs(arch) / dense
        with torch.no_grad():
            probs = relaxed.probs()
            expected = float(relaxed.expected_macs() / dense)
        return {"epoch": epoch + 1, "tau": tau, "weight_loss": loss,
                "expected_macs_ratio": expected, "argmax_macs_ratio": ratio,
                "arch": arch.to_dict(),
                "entropy": {space.dims[d].name: entropy(p) for d, p in probs.items()},
                "in_band": abs(ratio - target) <= self.cfg.tolerance}
