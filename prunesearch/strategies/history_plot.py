"""The figure a differentiable search leaves beside its results: how its argmax choices
evolve over the epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunesearch.figures import plt, save_figure


def plot_dimension_history(history: dict, space: Any, out: Path) -> list[Path]:
    """How a differentiable search's argmax choices evolve: one panel per target, the kept
    fraction (choice / full) of every dimension against the epoch."""
    targets = [t for t in history if history[t].get("epochs")]
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(4.5 * max(1, len(targets)), 3.5),
                             dpi=110, squeeze=False)
    full = {d.name: d.full for d in space.dims}
    for ax, target in zip(axes[0], targets, strict=False):
        epochs = history[target]["epochs"]
        for name in history[target]["dims"]:
            ax.plot([e["epoch"] for e in epochs], [e["arch"][name] / full[name] for e in epochs],
                    marker="o", ms=3, lw=1, alpha=0.7)
        cost = {"latency": "predicted latency"}.get(epochs[0].get("cost", "macs"), "MACs")
        ax.set_title(f"target {float(target):.2f} of dense {cost}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("argmax choice / full")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)
