"""`emo-pms`: divide-and-conquer EMO over sub-networks ("An EMO Joint Pruning with Multiple
Sub-networks").

1. Split the dimensions into consecutive sub-networks (the model's stages when its modules are
   named `stages.<i>`, else three consecutive chunks).
2. Run EMO on each sub-network's genes with the rest of the network at full width (half of the
   budget, shared equally).
3. Combine: every sub-front point has an impairment (dense proxy accuracy minus its accuracy)
   and costs MACs; assuming impairments add up, pick for each MACs target the combination of
   one point per sub-network with the least total impairment (exact MACs from the Space), and
   evaluate those whole-network candidates (a quarter of the budget).
4. Refine with a short whole-network EMO seeded with the best combined candidates (the rest).

Phases are budgeted in absolute evaluation counts and every phase's results are recovered from
the evaluator's cache, so `--resume` works phase by phase like `emo`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis
from prunesearch.pareto import pareto_indices
from prunesearch.spaces import Arch, Space
from prunesearch.strategies.base import Budget, SearchContext, Strategy
from prunesearch.strategies.emo import EmoOptions, EMOStrategy
from prunesearch.strategies.registry import register_strategy

MAX_COMBINATIONS = 200_000
_STAGE = re.compile(r"(?:^|[.:])stages\.(\d+)")


def split_dimensions(space: Space) -> list[list[int]]:
    """Dimension indices per sub-network, in network order."""
    parts: dict[int, list[int]] = {}
    for d, dim in enumerate(space.dims):
        match = _STAGE.search(dim.name)
        parts.setdefault(int(match.group(1)) if match else -1, []).append(d)
    if -1 in parts:  # the stem and other unstaged groups join the first stage
        unstaged = parts.pop(-1)
        first = min(parts, default=0)
        parts[first] = sorted(unstaged + parts.get(first, []))
    if len(parts) >= 2:
        return [parts[k] for k in sorted(parts)]
    dims = list(range(len(space.dims)))
    return [list(chunk) for chunk in np.array_split(dims, min(3, len(dims)))]


class SubSpace:
    """The genes of some dimensions of a Space, every other dimension at its largest choice:
    what a per-sub-network EMO searches."""

    def __init__(self, space: Space, dims: Sequence[int]) -> None:
        self.space = space
        self.idx = list(dims)
        self.dims = tuple(space.dims[d] for d in self.idx)
        self._full = space.encode(space.largest())

    def bounds(self) -> list[int]:
        return [len(d.choices) for d in self.dims]

    def decode(self, genes: Sequence[int]) -> Arch:
        full = list(self._full)
        for d, g in zip(self.idx, genes, strict=True):
            full[d] = int(g)
        return self.space.decode(full)

    def encode(self, arch: Arch) -> list[int]:
        genes = self.space.encode(arch)
        return [genes[d] for d in self.idx]

    def uniform_sweep(self) -> list[Arch]:
        """The space's uniform sweep, restricted to these dimensions."""
        return self._restricted(self.space.uniform_sweep())

    def compound_grid(self) -> list[Arch]:
        """The space's width x depth grid, restricted to these dimensions."""
        return self._restricted(self.space.compound_grid())

    def _restricted(self, archs: list[Arch]) -> list[Arch]:
        return list(dict.fromkeys(self.decode(self.encode(a)) for a in archs))

    def owns(self, arch: Arch) -> bool:
        genes = self.space.encode(arch)
        return all(g == f for d, (g, f) in enumerate(zip(genes, self._full, strict=True))
                   if d not in self.idx)

    @property
    def dense_macs(self) -> int:
        return self.space.dense_macs

    @property
    def dense_params(self) -> int:
        return self.space.dense_params


@register_strategy("emo-pms", options=EmoOptions)
class EMOPMSStrategy(Strategy):
    options: EmoOptions

    def _emo(self, ctx: SearchContext, space: Space | SubSpace, budget: int, tag: str,
             initial: list[Arch] | None = None) -> None:
        """Run EMO on `space` until `budget` evaluations in all (a child context with its own
        state folder)."""
        child = ctx.child(space, Budget(budget, ctx.budget.time_limit),
                          ctx.state_dir / "emo-pms" / tag)
        options = self.options.model_copy(update={"pop_size": min(self.options.pop_size,
                                                                  max(4, budget // 4))})
        EMOStrategy(options, initial=initial).search(child)

    def search(self, ctx: SearchContext) -> None:
        total = ctx.budget.max_evals
        parts = [SubSpace(ctx.space, dims) for dims in split_dimensions(ctx.space)]
        dense = ctx.evaluate([ctx.space.largest()])
        for i, part in enumerate(parts):
            if ctx.out_of_time():
                return
            self._emo(ctx, part, (total // 2) * (i + 1) // len(parts), f"part{i}")
        known = ctx.evaluator.results()
        dense_acc = next((r.val_score for r in dense + known
                          if r.arch == ctx.space.largest() and r.ok), None)
        if dense_acc is None:
            return  # the dense arch failed: nothing to measure impairments against
        combined = self._combine(ctx, parts, known, dense_acc, (3 * total) // 4 - ctx.n_evals)
        results = ctx.evaluate(combined)
        seeds = [r.arch for r in _front(results + [r for r in known if r.ok], ctx.axis)]
        self._emo(ctx, ctx.space, total, "refine", initial=seeds)

    def _combine(self, ctx: SearchContext, parts: list[SubSpace], known: list[Result],
                 dense_acc: float, n: int) -> list[Arch]:
        """Whole-network archs for `n` cost targets (the run's axis), by least summed impairment."""
        if n <= 0:
            return []
        options = []
        for part in parts:
            front = _front([r for r in known if r.ok and part.owns(r.arch)], ctx.axis)
            options.append([(0.0, part.encode(ctx.space.largest()))] + [
                (max(0.0, dense_acc - r.val_score), part.encode(r.arch)) for r in front])
        while np.prod([len(o) for o in options]) > MAX_COMBINATIONS:
            longest = max(range(len(options)), key=lambda i: len(options[i]))
            options[longest] = options[longest][::2]  # thin the longest front evenly
        base = ctx.space.encode(ctx.space.largest())
        candidates = []
        for combo in itertools.product(*options):
            genes = list(base)
            for part, (_, sub) in zip(parts, combo, strict=True):
                for d, g in zip(part.idx, sub, strict=True):
                    genes[d] = g
            arch = ctx.space.decode(genes)
            candidates.append((sum(imp for imp, _ in combo), ctx.axis.arch_ratio(arch), arch))
        picked: list[Arch] = []
        for target in np.linspace(0.1, 1.0, n):
            fits = [c for c in candidates if c[1] <= target]
            if fits:
                arch = min(fits, key=lambda c: (c[0], c[1]))[2]
                if arch not in picked:
                    picked.append(arch)
        return picked


def _front(results: list[Result], axis: CostAxis) -> list[Result]:
    ok = [r for r in results if r.ok]
    return [ok[i] for i in pareto_indices([r.val_score for r in ok], [axis.of(r) for r in ok])]
