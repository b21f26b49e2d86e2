"""How well the latency table predicts measured latency: per model and batch size, the table is
built from scratch (timed), then 30 random subnetworks of the default space, none of them among
the table's calibration subnetworks, are built and timed and compared with the prediction:
median absolute error and Spearman rank correlation, beside the Spearman of MACs alone (what
the search ranked by before). Each subnetwork is timed in turns alternating with the dense
model (`latency_ratio`), in PASSES passes over the whole set; the median over passes is the
measurement, so the latency RATIO (what search.max_latency and the front use) is compared too,
free of the machine's drift between the table's building and the measurement. The first two
passes compared with each other give the measurement's own repeatability: the floor under any
model's error on this machine. `--runtime onnxruntime` does the same with the table, the
subnetworks and the dense model run as ONNX by onnxruntime's CPU provider (results in
latency_model_onnxruntime.json and its own section).

    python benchmarks/latency_model.py
    python benchmarks/latency_model.py --runtime onnxruntime
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

from prunesearch.app.prepare import space_of  # noqa: E402
from prunesearch.latency import build_latency_model, latency_ratio  # noqa: E402
from prunesearch.latency.table import calibration_archs  # noqa: E402
from prunesearch.models import build_model  # noqa: E402
from prunesearch.spaces.options import SpaceConfig  # noqa: E402

SHAPE = (1, 28, 28)
PASSES = 3
PAIRS = 6


def evaluate(name: str, batch: int, n_archs: int, cache: Path,
             runtime: str = "torch") -> dict[str, Any]:
    model = build_model(name, SHAPE, 10).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, *SHAPE))
    table = build_latency_model(space, model, batch, torch.device("cpu"), cache_dir=cache,
                                runtime=runtime)
    calibration = set(calibration_archs(space, 0))
    rng = np.random.default_rng(100)
    archs: list = []
    while len(archs) < n_archs:
        arch = space.sample(rng)
        if arch not in calibration and arch not in archs:
            archs.append(arch)
    slicer = space.slicer(model)
    nets = [slicer.build(arch) for arch in archs]
    # passes over the whole set, minutes apart: one pass of this shared VM's timings can sit
    # in a phase where thin (memory-bound) networks are dearer relative to the dense one
    passes = [[latency_ratio(net, model, SHAPE, batch, pairs=PAIRS, runtime=runtime)
               for net in nets] for _ in range(PASSES)]
    ratios = np.median([[r for _, _, r in row] for row in passes], axis=0)
    own_ms = np.median([[ms for ms, _, _ in row] for row in passes], axis=0)
    dense_us = 1000 * float(np.median([[ms for _, ms, _ in row] for row in passes]))
    first, second = (np.array([r for _, _, r in row]) for row in passes[:2])
    p = np.array([table.predict(arch) for arch in archs])
    macs = [space.macs(arch) for arch in archs]
    errors = np.abs(p / (1000 * own_ms) - 1)
    predicted_ratio = p / table.predict(space.largest())
    ratio_errors = np.abs(predicted_ratio / ratios - 1)
    # the table's ratios put on one measurement of the dense model today: the absolute figure
    # a user gets after timing the dense network once on a machine whose speed has moved
    anchored_errors = np.abs(predicted_ratio * dense_us / (1000 * own_ms) - 1)
    return {"model": name, "batch": batch, "runtime": runtime, "archs": n_archs,
            "table": table.meta,
            "median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
            "dense_us_at_build": table.meta["dense_measured_us"],
            "dense_us_measured": dense_us,
            "anchored_median_abs_error": float(np.median(anchored_errors)),
            "anchored_max_abs_error": float(anchored_errors.max()),
            "ratio_median_abs_error": float(np.median(ratio_errors)),
            "ratio_max_abs_error": float(ratio_errors.max()),
            "spearman": float(spearmanr(p, ratios).statistic),
            "spearman_macs": float(spearmanr(macs, ratios).statistic),
            "repeat_median_abs_difference": float(np.median(np.abs(first / second - 1))),
            "repeat_spearman": float(spearmanr(first, second).statistic),
            "measured_us": (1000 * own_ms).tolist(), "measured_ratio": ratios.tolist(),
            "measured_ratio_passes": [[r for _, _, r in row] for row in passes],
            "predicted_us": p.tolist(), "macs": macs}


def table_lines(rows: list[dict[str, Any]], m: dict[str, Any], command: str,
                archs: int, runtime: str) -> list[str]:
    lines = ["| model | batch | table entries | build (s) | calibration fit | dense model: at "
             "build / measured (µs) | median abs error (max) | anchored on the dense model "
             "today (max) | error of the ratio to dense (max) | Spearman | Spearman of MACs | "
             "pass 1 vs pass 2: median difference, Spearman |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['table']['entries']} | "
              f"{r['table']['total_s']:.0f} | "
              f"{100 * r['table']['calibration_median_abs_error']:.1f}% | "
              f"{r['dense_us_at_build']:.0f} / {r['dense_us_measured']:.0f} | "
              f"{100 * r['median_abs_error']:.1f}% ({100 * r['max_abs_error']:.0f}%) | "
              f"{100 * r['anchored_median_abs_error']:.1f}% "
              f"({100 * r['anchored_max_abs_error']:.0f}%) | "
              f"{100 * r['ratio_median_abs_error']:.1f}% ({100 * r['ratio_max_abs_error']:.0f}%) "
              f"| {r['spearman']:.3f} | {r['spearman_macs']:.3f} | "
              f"{100 * r['repeat_median_abs_difference']:.1f}%, {r['repeat_spearman']:.3f} |"
              for r in rows]
    where = ("" if runtime == "torch" else
             f"; table and every network timed in {rows[0]['table']['runtime']}, CPU provider")
    lines.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}{where}; {archs} random "
                 f"subnetworks per row (none used for calibration), each timed in {PAIRS} "
                 f"pairs of turns with the dense model (a turn: one untimed forward, then the "
                 f"median of 2 timed ones), in {PASSES} passes over the set; measured = median "
                 f"over passes; errors of the prediction against it. Anchored: the predicted "
                 f"ratio to dense times the dense model's median over the whole row's "
                 f"measurement (one figure per row, not per subnetwork).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/latency_model.py")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch")
    args = parser.parse_args()
    name = "latency_model" if args.runtime == "torch" else f"latency_model_{args.runtime}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # an empty cache: building is timed
        for model in ("resnet20", "mobilenetv2_small"):
            for batch in (1, 64):
                rows.append(evaluate(model, batch, args.archs, Path(tmp), args.runtime))
                r = rows[-1]
                print(f"{model} b{batch}: median |err| {100 * r['median_abs_error']:.1f}% "
                      f"(anchored {100 * r['anchored_median_abs_error']:.1f}%; dense "
                      f"{r['dense_us_at_build']:.0f} us at build, "
                      f"{r['dense_us_measured']:.0f} us now) "
                      f"(of the ratio to dense {100 * r['ratio_median_abs_error']:.1f}%), "
                      f"spearman {r['spearman']:.3f} (MACs {r['spearman_macs']:.3f}), "
                      f"table {r['table']['total_s']:.0f} s", flush=True)
    m = machine()
    save_results(name, {"command": command_line(), "machine": m, "rows": rows})
    lines = table_lines(rows, m, command_line(), args.archs, args.runtime)
    publish(name, lines)


if __name__ == "__main__":
    main()
