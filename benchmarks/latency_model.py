"""How well the latency table predicts measured latency: per model and batch size, the table is
built from scratch (timed), then 30 random subnetworks of the default space, none of them among
the table's calibration subnetworks, are built and timed (median after warm-up) and compared
with the prediction: median absolute error and Spearman rank correlation, beside the Spearman
of MACs alone (what the search ranked by before). Each subnetwork is timed in rounds
alternating with the dense model, so the latency RATIO (what search.max_latency and the front
use) is compared too, free of the machine's drift between the table's building and the
measurement.

    python benchmarks/latency_model.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, publish, save_results  # noqa: E402

from prunesearch.config import SpaceConfig  # noqa: E402
from prunesearch.latency import build_latency_model, latency_ratio  # noqa: E402
from prunesearch.latency.table import calibration_archs  # noqa: E402
from prunesearch.models import build_model  # noqa: E402
from prunesearch.pipeline import space_of  # noqa: E402

SHAPE = (1, 28, 28)


def evaluate(name: str, batch: int, n_archs: int, cache: Path) -> dict[str, Any]:
    model = build_model(name, SHAPE, 10).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, *SHAPE))
    table = build_latency_model(space, model, batch, torch.device("cpu"), cache_dir=cache)
    calibration = set(calibration_archs(space, 0))
    rng = np.random.default_rng(100)
    archs: list = []
    while len(archs) < n_archs:
        arch = space.sample(rng)
        if arch not in calibration and arch not in archs:
            archs.append(arch)
    slicer = space.slicer(model)
    repeats = 30 if batch == 1 else 15
    measured, ratios, predicted, macs = [], [], [], []
    for arch in archs:
        net_ms, _, ratio = latency_ratio(slicer.build(arch), model, SHAPE, batch, rounds=3,
                                         repeats=repeats)
        measured.append(1000 * net_ms)
        ratios.append(ratio)
        predicted.append(table.predict(arch))
        macs.append(space.macs(arch))
    m, p = np.array(measured), np.array(predicted)
    errors = np.abs(p / m - 1)
    ratio_errors = np.abs((p / table.predict(space.largest())) / np.array(ratios) - 1)
    return {"model": name, "batch": batch, "archs": n_archs, "table": table.meta,
            "median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
            "ratio_median_abs_error": float(np.median(ratio_errors)),
            "ratio_max_abs_error": float(ratio_errors.max()),
            "spearman": float(spearmanr(p, m).statistic),
            "spearman_macs": float(spearmanr(macs, m).statistic),
            "measured_us": measured, "measured_ratio": ratios, "predicted_us": predicted,
            "macs": macs}


def table_lines(rows: list[dict[str, Any]], m: dict[str, Any], command: str,
                archs: int) -> list[str]:
    lines = ["| model | batch | table entries | build (s) | calibration fit | median abs error "
             "(max) | error of the ratio to dense (max) | Spearman | Spearman of MACs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['table']['entries']} | "
              f"{r['table']['total_s']:.0f} | "
              f"{100 * r['table']['calibration_median_abs_error']:.1f}% | "
              f"{100 * r['median_abs_error']:.1f}% ({100 * r['max_abs_error']:.0f}%) | "
              f"{100 * r['ratio_median_abs_error']:.1f}% ({100 * r['ratio_max_abs_error']:.0f}%) "
              f"| {r['spearman']:.3f} | {r['spearman_macs']:.3f} |" for r in rows]
    lines.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}; {archs} random "
                 f"subnetworks per row (none used for calibration), latency = median of timed "
                 f"forwards after warm-up, each subnetwork timed in 3 rounds alternating with "
                 f"the dense model for the ratio.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/latency_model.py")
    parser.add_argument("--archs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # an empty cache: building is timed
        for name in ("resnet20", "mobilenetv2_small"):
            for batch in (1, 64):
                rows.append(evaluate(name, batch, args.archs, Path(tmp)))
                r = rows[-1]
                print(f"{name} b{batch}: median |err| {100 * r['median_abs_error']:.1f}% "
                      f"(of the ratio to dense {100 * r['ratio_median_abs_error']:.1f}%), "
                      f"spearman {r['spearman']:.3f} (MACs {r['spearman_macs']:.3f}), "
                      f"table {r['table']['total_s']:.0f} s", flush=True)
    m = machine()
    save_results("latency_model", {"command": command_line(), "machine": m, "rows": rows})
    lines = table_lines(rows, m, command_line(), args.archs)
    publish("latency_model", lines)


if __name__ == "__main__":
    main()
