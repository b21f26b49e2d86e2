"""Figures written the same way everywhere: matplotlib without a screen (Agg), each figure saved
as PNG and SVG, atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunesearch.fileio import write_atomic  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig: plt.Figure, out: Path) -> list[Path]:
    """Write `out` (.png) and the same name with .svg, each atomically."""
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    for path in (png, svg):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:])
        write_atomic(path, buf.getvalue())
    plt.close(fig)
    return [png, svg]
