"""Pareto plots: every candidate, the front and the dense model; several runs overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prunesearch.figures import plt, save_figure
from prunesearch.metrics import ACCURACY, Metric

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
    return save_figure(fig, out)


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
    return save_figure(fig, out)
