"""Pareto plots: every candidate, the front and the dense model; several runs overlaid."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunesearch.fileio import write_atomic  # noqa: E402
from prunesearch.metrics import ACCURACY, Metric  # noqa: E402

# Per cost axis: the unit its values are drawn in, and the x label.
_UNITS = {"macs": (1e6, "FLOPs (MACs, millions per example)"),
          "params": (1e3, "parameters (thousands)"),
          "latency": (1e3, "predicted latency (ms per batch)")}


@dataclass(frozen=True)
class PlotSeries:
    """One run against one cost axis (`axis`: macs, params or latency, in their units)."""

    label: str
    axis: str
    cost: Sequence[float]
    score: Sequence[float]  # prunesearch.metrics scores; drawn as the metric's values
    front_cost: Sequence[float]
    front_score: Sequence[float]
    dense_cost: float
    dense_score: float | None
    final_cost: Sequence[float] = ()  # fine-tuned models: test scores
    final_score: Sequence[float] = ()
    dense_test_score: float | None = None
    sparse: bool = False  # MACs count only the non-zero weights of masked layers
    metric: Metric = ACCURACY

    def y(self, scores: Sequence[float]) -> list[float]:
        """What the y axis draws: accuracy in %, or the metric's own value."""
        m = self.metric
        return [100 * v if m is ACCURACY else m.value(v) for v in scores]


def _save(fig: plt.Figure, out: Path) -> list[Path]:
    """Write `out` (.png) and the same name with .svg, each atomically."""
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    for path in (png, svg):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:])
        write_atomic(path, buf.getvalue())
    plt.close(fig)
    return [png, svg]


def plot_hv_histories(histories: Sequence[tuple[str, Sequence[float]]], out: Path,
                      cost_label: str = "MACs") -> list[Path]:
    """Hypervolume against evaluations, one line per run: strategies on the same axes."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, hv in histories:
        ax.plot(range(1, len(hv) + 1), hv, label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"hypervolume (1 - val score, {cost_label} ratio; ref. (1, 1))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


def plot_fronts(series: Sequence[PlotSeries], out: Path, title: str) -> list[Path]:
    """Draw to `out` (.png) and the same name with .svg; returns the files written. Every
    series must be on the same cost axis."""
    axes = {s.axis for s in series}
    if len(axes) != 1:
        raise ValueError(f"series on different cost axes: {sorted(axes)}")
    metrics = {s.metric for s in series}
    if len(metrics) != 1:
        raise ValueError(f"series of different metrics: {sorted(m.name for m in metrics)}")
    unit, xlabel = _UNITS[series[0].axis]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, s in enumerate(series):
        color = colors[k % len(colors)]
        ax.scatter([m / unit for m in s.cost], s.y(s.score), s=9, alpha=0.35,
                   color=color, label=f"{s.label}: candidates ({len(s.cost)})")
        ax.step([m / unit for m in s.front_cost], s.y(s.front_score), where="post",
                marker="o", ms=4, color=color, label=f"{s.label}: proxy front (val)")
        if s.final_cost:
            ax.plot([m / unit for m in s.final_cost], s.y(s.final_score), marker="D",
                    ms=7, ls="--", color=color, markeredgecolor="black",
                    label=f"{s.label}: fine-tuned (test)", zorder=4)
    dense = series[0]
    if dense.dense_score is not None:
        ax.scatter([dense.dense_cost / unit], dense.y([dense.dense_score]), marker="*", s=160,
                   color="black", zorder=5, label="dense model (val)")
    if dense.dense_test_score is not None and any(s.final_cost for s in series):
        ax.scatter([dense.dense_cost / unit], dense.y([dense.dense_test_score]), marker="D",
                   s=50, color="black", zorder=5, label="dense model (test)")
    if dense.axis == "macs" and any(s.sparse for s in series):
        xlabel = "FLOPs (sparse MACs: non-zero weights only, millions per example)"
    ax.set_xlabel(xlabel)
    name = "accuracy (%)" if dense.metric is ACCURACY else f"{dense.metric.name} (lower is better)"
    ax.set_ylabel(f"{name}: proxy on validation, fine-tuned on test")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right" if dense.metric.lower_is_better else "lower right")
    secondary = ax.secondary_xaxis("top", functions=(lambda m: m * unit / dense.dense_cost,
                                                     lambda r: r * dense.dense_cost / unit))
    secondary.set_xlabel("fraction of the dense model's")
    fig.tight_layout()
    return _save(fig, out)


def plot_dimension_history(history: dict, space, out: Path) -> list[Path]:
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
    return _save(fig, out)
