"""How well the search's proxy ranks networks: Kendall tau between proxy accuracy (weight
sharing: sliced weights, BatchNorm recalibrated, validation subset) and the test accuracy the
same architectures reach once fine-tuned, with and without the supernet stage.

resnet20 on Fashion-MNIST, the default job's dense model (`--dense-epochs`) and TPE search; per
variant, `--points` architectures at or under `--max-ratio` of dense MACs, spread evenly by
MACs over the search's proxy front there (topped up from the best remaining candidates when the
front is shorter). Each is fine-tuned `--ft-epochs` the way the product fine-tunes by default
(finetune.kd: labels only, or distillation from the network it was cut from), then tested on
the 10000 test images, which nothing chose from.

    python benchmarks/proxy_fidelity.py

writes benchmarks/results/proxy_fidelity.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import (  # noqa: E402
    add_job_arguments,
    full_finetune_recipe,
    searched,
    training_overrides,
)
from _machine import command_line, device_label, machine, publish, save_results  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import resolve_device  # noqa: E402
from prunesearch.evaluators import Result  # noqa: E402
from prunesearch.pareto import pareto_indices  # noqa: E402
from prunesearch.training import Distillation, train_model  # noqa: E402


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired samples (ties in either count against neither)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


def spread(results: list[Result], limit: int, n: int) -> list[Result]:
    """`n` candidates under `limit` MACs: the proxy front's points spread evenly by MACs, topped
    up with the best remaining candidates by proxy accuracy."""
    under = [r for r in results if r.macs <= limit]
    front = sorted((under[i] for i in pareto_indices([r.val_score for r in under],
                                                      [r.macs for r in under])),
                   key=lambda r: r.macs)
    picks = [front[round(i * (len(front) - 1) / max(1, n - 1))] for i in range(min(n, len(front)))]
    chosen = {r.arch: r for r in picks}
    for r in sorted(under, key=lambda r: -r.val_score):
        if len(chosen) >= n:
            break
        chosen.setdefault(r.arch, r)
    return sorted(chosen.values(), key=lambda r: r.macs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--supernet-epochs", type=int, default=1)
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--max-ratio", type=float, default=0.5)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    start = time.perf_counter()
    base = [*training_overrides("resnet20", args.dense_epochs, args.max_train_images),
            f"search.budget={args.search_budget}"]
    cfg = load_config(None, base)
    recipe = full_finetune_recipe(cfg, args.ft_epochs)
    variants: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, epochs in (("dense weights", 0), ("supernet", args.supernet_epochs)):
            found = searched(base + [f"supernet.epochs={epochs}"], Path(tmp),
                             f"fidelity-{epochs}", dev)
            slicer = found.prep.space.slicer(found.prep.model)
            distill = (Distillation(found.prep.model, cfg.finetune.temperature,
                                    cfg.finetune.alpha) if cfg.finetune.kd else None)
            points = []
            limit = args.max_ratio * found.prep.space.dense_macs
            for r in spread(found.results, limit, args.points):
                report = train_model(slicer.build(r.arch), found.prep.data, recipe, seed=0,
                                     device=dev, progress=False, distill=distill)
                points.append({"macs_ratio": r.macs / found.prep.space.dense_macs,
                               "proxy": r.val_score, "test_acc": report.test_score})
                print(name, points[-1], flush=True)
            variants[name] = {
                "supernet_epochs": epochs, "points": points,
                "kendall_tau": kendall_tau([p["proxy"] for p in points],
                                           [p["test_acc"] for p in points])}
    m = machine()
    save_results("proxy_fidelity", {"command": command_line(), "machine": m, "device": str(dev),
                                    "args": {k: v for k, v in vars(args).items()},
                                    "variants": variants})
    device = device_label(m, str(dev))
    lines = ["| proxy scored on | architectures | MACs ratios | proxy range | fine-tuned test "
             "range | Kendall tau |", "|---|---|---|---|---|---|"]
    for name, v in variants.items():
        pts = v["points"]
        lines.append(
            f"| {name} | {len(pts)} | {min(p['macs_ratio'] for p in pts):.2f} - "
            f"{max(p['macs_ratio'] for p in pts):.2f} | "
            f"{min(p['proxy'] for p in pts):.3f} - {max(p['proxy'] for p in pts):.3f} | "
            f"{min(p['test_acc'] for p in pts):.3f} - {max(p['test_acc'] for p in pts):.3f} | "
            f"{v['kendall_tau']:.3f} |")
    lines.append(f"\n`{command_line()}` on {m['date']}: {device}, torch {m['torch']}; "
                 f"{(time.perf_counter() - start) / 60:.0f} min; resnet20, dense "
                 f"{args.dense_epochs} epochs, supernet {args.supernet_epochs} epoch(s), "
                 f"fine-tuning {args.ft_epochs} epochs on "
                 f"{'distillation' if cfg.finetune.kd else 'labels'}, at or under "
                 f"{args.max_ratio} of dense MACs.")
    publish("proxy_fidelity", lines)


if __name__ == "__main__":
    main()
