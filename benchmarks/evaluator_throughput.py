"""Weight-sharing evaluator throughput and its overhead over a plain forward pass.

For random candidates of the default job's space (resnet20 on Fashion-MNIST, the default
evaluator settings), time `evaluator.evaluate` (slice the dense weights, recalibrate BatchNorm,
score the validation subset) and the plain eval-mode forward of that candidate's own slim model
over the same images (calibration + validation), warmed up. Target: ratio <= 1.3.

    python benchmarks/evaluator_throughput.py [--candidates 30] [--device cpu]

Weights are freshly initialised (throughput does not depend on their values), so the script
needs no trained checkpoint. Writes benchmarks/results/evaluator_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine, write_section  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import build_space, load_run_data, make_evaluator, resolve_device
from prunesearch.models import build_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def _forward_seconds(model: torch.nn.Module, batches: list[torch.Tensor],
                     device: torch.device) -> float:
    model.eval()
    for x in batches[:1]:
        model(x)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for x in batches:
        model(x)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cfg = load_config(None)
    data = load_run_data(cfg, device)
    torch.manual_seed(0)
    model = build_model(cfg.model.name, data.input_shape, data.num_classes).to(device).eval()
    space = build_space(cfg, model, data)
    evaluator = make_evaluator(cfg, space, model, data)
    images = evaluator.calib + list(evaluator.val_x.split(cfg.evaluator.batch_size))
    rng = np.random.default_rng(0)
    evaluator.evaluate([space.sample(rng)])  # warm-up of the whole path
    rows = []
    for _ in range(args.candidates):
        arch = space.sample(rng)
        _sync(device)
        start = time.perf_counter()
        evaluator.evaluate([arch])
        _sync(device)
        eval_s = time.perf_counter() - start
        forward_s = _forward_seconds(evaluator.build(arch), images, device)
        rows.append({"macs_ratio": space.macs(arch) / space.dense_macs, "eval_s": eval_s,
                     "forward_s": forward_s, "ratio": eval_s / forward_s})
    ratios = [r["ratio"] for r in rows]
    result = {
        "command": "python benchmarks/evaluator_throughput.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "device": str(device),
        "model": cfg.model.name, "dataset": cfg.data.dataset,
        "images_per_candidate": sum(len(x) for x in images),
        "candidates": len(rows),
        "candidates_per_s": len(rows) / sum(r["eval_s"] for r in rows),
        "overhead_ratio_median": statistics.median(ratios),
        "overhead_ratio_mean": statistics.fmean(ratios),
        "overhead_ratio_max": max(ratios),
        "target_ratio": 1.3,
        "per_candidate": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    tag = "" if device.type == "cpu" else f"_{device.type}"
    (RESULTS / f"evaluator_throughput{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    table = (
        f"| device | candidates/s | eval / forward (median) | mean | max | images/candidate |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {device} ({m['cuda'] or m['cpu']}, {m['torch_threads']} threads) | "
        f"{result['candidates_per_s']:.2f} | {result['overhead_ratio_median']:.3f} | "
        f"{result['overhead_ratio_mean']:.3f} | {result['overhead_ratio_max']:.3f} | "
        f"{result['images_per_candidate']} |\n\n"
        f"`{result['command']}` on {m['date']}, torch {m['torch']}, {m['cores']} cores.\n"
    )
    write_section(f"evaluator_throughput{tag}", table)
    print(table)


if __name__ == "__main__":
    main()
