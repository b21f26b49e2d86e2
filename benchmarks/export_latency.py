"""Exported latency versus MACs: is a pruned network as much faster as its MACs say?

For resnet20 and mobilenetv2_small on Fashion-MNIST-shaped input (1x28x28), build the uniform-
width subnetworks closest to 25%, 50% and 75% of dense MACs as real smaller models (the same
slicing as the search and the export), and measure the median CPU latency at batch 1 and 64
(after warm-up, the machine's torch thread count), next to the dense model's.

    python benchmarks/export_latency.py

Latency does not depend on weight values, so freshly initialised models are used.
Writes benchmarks/results/export_latency.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, write_section  # noqa: E402

from prunesearch.latency.measure import measure_latency_ms  # noqa: E402
from prunesearch.models import create_model  # noqa: E402
from prunesearch.spaces import DEFAULT_WIDTH_RATIOS, Space  # noqa: E402

SHAPE = (1, 28, 28)
TARGETS = (0.25, 0.5, 0.75)
FINE_RATIOS = [r / 100 for r in range(10, 101, 2)]  # width ratios to find each MACs target


def main() -> None:
    rows = []
    for name in ("resnet20", "mobilenetv2_small"):
        torch.manual_seed(0)
        model = create_model(name, SHAPE[0], 10).eval()
        space = Space.from_model(model, torch.zeros(1, *SHAPE), FINE_RATIOS, depth=False)
        slicer = space.slicer(model)
        dense = {b: measure_latency_ms(model, SHAPE, b, repeats=200 if b == 1 else 50)
                 for b in (1, 64)}
        for target in TARGETS:
            arch = min((space.uniform(r) for r in FINE_RATIOS),
                       key=lambda a: abs(space.macs(a) / space.dense_macs - target))
            slim = slicer.build(arch).eval()
            lat = {b: measure_latency_ms(slim, SHAPE, b, repeats=200 if b == 1 else 50)
                   for b in (1, 64)}
            rows.append({"model": name, "target": target,
                         "macs_ratio": space.macs(arch) / space.dense_macs,
                         "params_ratio": space.params(arch) / space.dense_params,
                         "latency_ms": lat, "dense_latency_ms": dense,
                         "latency_ratio": {b: lat[b] / dense[b] for b in lat}})
    result = {"command": "python benchmarks/export_latency.py", "machine": machine(),
              "input_shape": SHAPE, "width_grid_for_targets": "uniform width, ratio step 0.02",
              "default_width_ratios_of_search": DEFAULT_WIDTH_RATIOS, "rows": rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "export_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["| model | MACs ratio | latency ratio, batch 1 | latency ratio, batch 64 | "
             "slim ms (b1 / b64) | dense ms (b1 / b64) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lat, dense = r["latency_ms"], r["dense_latency_ms"]
        lines.append(f"| {r['model']} | {r['macs_ratio']:.3f} | {r['latency_ratio'][1]:.3f} | "
                     f"{r['latency_ratio'][64]:.3f} | {lat[1]:.2f} / {lat[64]:.1f} | "
                     f"{dense[1]:.2f} / {dense[64]:.1f} |")
    lines.append(f"\n`{result['command']}` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}; medians after "
                 f"warm-up (200 runs at batch 1, 50 at batch 64).")
    table = "\n".join(lines) + "\n"
    write_section("export_latency", table)
    print(table)


if __name__ == "__main__":
    main()
