"""Does searching on predicted latency pay? The default job (resnet20 on Fashion-MNIST, TPE)
searched on MACs, and searched again on the latency its table predicts at batch 1 and,
separately, at batch 64, with search.max_latency = the target (0.5 of the dense model's).

Per batch size: the latency search's most accurate proxy point is exported as a real model and
its latency MEASURED (median after warm-up, this machine's CPU) against the dense model's.
From the MACs search's front, every point is measured the same way (each timed in rounds
alternating with the dense model, the median ratio kept) and the most accurate
proxy point whose measured latency is at most that is "the MACs-targeted choice of equal
latency"; its naive choice (the best point at or under the target's MACs ratio) is measured
too. The two chosen points are fine-tuned the same way (`--ft-epochs` on every training image,
the product's recipe) and tested on the 10000 test images, which nothing chose from.

    python benchmarks/latency_search.py

writes benchmarks/results/latency_search.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import EVERY_IMAGE, finetune, search  # noqa: E402
from _machine import command_line, machine, publish, save_results  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare  # noqa: E402
from prunesearch.latency import latency_ratio  # noqa: E402
from prunesearch.runs.rundir import RunView  # noqa: E402
from prunesearch.spaces import Arch  # noqa: E402


def measured_ratio(model: torch.nn.Module, dense: torch.nn.Module, shape: tuple[int, ...],
                   batch: int) -> float:
    """Measured latency / the dense model's, timed in alternating rounds (drift-free)."""
    return latency_ratio(model, dense, shape, batch, pairs=30 if batch == 1 else 15)[2]


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (r["val_score"], -r["macs"]))


def row(batch: int, kind: str, r: dict[str, Any], measured: float, test: float | None,
        wall: float, predicted: float | None) -> dict[str, Any]:
    """One chosen point: its costs, measured latency ratio to the dense model, accuracies."""
    return {"batch": batch, "choice": kind, "id": r["id"], "arch": r["arch"],
            "macs_ratio": r["macs_ratio"], "predicted_latency_ratio": predicted,
            "measured_latency_ratio": measured, "proxy": r["val_score"], "test_acc": test,
            "search_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=240)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--max-train-images", type=int, default=None,
                        help="train everything on a prefix (a quick check of the script only)")
    args = parser.parse_args()
    start = time.perf_counter()
    base = [f"search.budget={args.budget}"]
    if args.max_train_images:
        base += [f"model.train.max_train_images={args.max_train_images}",
                 f"supernet.max_train_images={args.max_train_images}"]
    images = args.max_train_images or EVERY_IMAGE
    tune = [f"finetune.epochs={args.ft_epochs}", f"finetune.max_train_images={images}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        macs_run, _, macs_wall = search(None, base, out, "macs")
        prep = prepare(load_config(None, base), torch.device("cpu"), progress=False)
        shape = tuple(prep.data.input_shape)
        slicer = prep.space.slicer(prep.model)
        macs_front = [p.row() for p in RunView.load(macs_run).front]
        for batch in [int(b) for b in args.batches.split(",")]:
            lat_run, _, lat_wall = search(None, base, out, f"latency-b{batch}",
                                          "search.objective=latency",
                                          f"search.latency_batch={batch}",
                                          f"search.max_latency={args.target}")
            lat_view = RunView.load(lat_run)
            picked = best([p.row() for p in lat_view.front])
            picked_ratio = measured_ratio(slicer.build(Arch.from_dict(picked["arch"])),
                                          prep.model, shape, batch)
            front_ratio = {r["id"]: measured_ratio(slicer.build(Arch.from_dict(r["arch"])),
                                                   prep.model, shape, batch)
                           for r in macs_front}
            as_fast = [r for r in macs_front if front_ratio[r["id"]] <= picked_ratio]
            # none as fast: the MACs front's fastest point, slower than the latency pick
            equal = best(as_fast) if as_fast else min(macs_front,
                                                      key=lambda r: front_ratio[r["id"]])
            naive = best([r for r in macs_front if r["macs_ratio"] <= args.target])
            tuned_lat = finetune(lat_run, [picked["id"]], *tune)[picked["id"]]
            tuned_macs = finetune(macs_run, [equal["id"]], *tune)[equal["id"]]
            table = lat_view.summary["latency_table"]
            rows += [
                row(batch, "latency search, best proxy under the target", picked,
                    picked_ratio, tuned_lat["test_score"], lat_wall, picked["cost_ratio"]),
                row(batch, "MACs search, best proxy at equal measured latency"
                    if as_fast else "MACs search: none as fast; its fastest point", equal,
                    front_ratio[equal["id"]], tuned_macs["test_score"], macs_wall, None),
                row(batch, f"MACs search, best proxy at <= {args.target} MACs",
                    naive, front_ratio[naive["id"]], None, macs_wall, None)]
            rows[-3]["table"] = table
            for r in rows[-3:]:
                print({k: v for k, v in r.items() if k not in ("arch", "table")}, flush=True)
    m = machine()
    save_results("latency_search", {
        "command": command_line(), "machine": m, "args": vars(args), "rows": rows,
        "latency_note": "ratio to the dense model timed in alternating rounds, median over "
                        "rounds"})
    lines = ["| batch | choice | MACs ratio | predicted latency ratio | measured latency ratio "
             "| proxy | fine-tuned test |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        pred = r["predicted_latency_ratio"]
        test = r["test_acc"]
        lines.append(f"| {r['batch']} | {r['choice']} | {r['macs_ratio']:.3f} | "
                     f"{'' if pred is None else f'{pred:.3f}'} | "
                     f"{r['measured_latency_ratio']:.3f} | {r['proxy']:.4f} | "
                     f"{'' if test is None else f'{100 * test:.2f}%'} |")
    lines.append(f"\n`{command_line()}` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}; "
                 f"{(time.perf_counter() - start) / 60:.0f} min. The default job's dense model "
                 f"and supernet stage, TPE {args.budget} candidates per search; latency "
                 f"searches with search.max_latency = {args.target}; chosen points fine-tuned "
                 f"{args.ft_epochs} epochs on every training image (labels only).")
    publish("latency_search", lines)


if __name__ == "__main__":
    main()
