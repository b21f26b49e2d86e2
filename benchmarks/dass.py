"""DASS against global magnitude pruning at the same weight density, both fine-tuned the same
way (distillation, masks held, `--ft-epochs`).

On configs/masks.toml (resnet20 on Fashion-MNIST, one density dimension per conv/linear layer,
the cached dense model): DASS searches each sparse-MACs target for `--epochs` epochs; global
magnitude is then asked for exactly the weight density DASS's result has; both points are
fine-tuned and tested. Search wall time per method.

    python benchmarks/dass.py [--epochs 3] [--ft-epochs 1]

Writes benchmarks/results/dass.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from _finetuned import finetune, search  # noqa: E402
from _machine import command_line, machine, save_results, write_section  # noqa: E402,E501

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare  # noqa: E402

CONFIG = Path(__file__).parent.parent / "configs" / "masks.toml"
TARGETS = (0.5, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ft-epochs", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    space = prepare(load_config(CONFIG), torch.device("cpu"), progress=False).space
    ft = [f"finetune.epochs={args.ft_epochs}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_dir, cands, wall = search(CONFIG, [], out, "dass", "search.strategy=dass",
                                      f"search.dass.targets={sorted(TARGETS)}",
                                      f"search.dass.epochs={args.epochs}")
        found = [c for c in cands if c.result.ok]
        densities = [round(space.weight_density(c.result.arch), 4) for c in found]
        tuned = finetune(run_dir, [c.id for c in found], *ft)
        for c, d in zip(found, densities, strict=True):
            rows.append(_row("dass", c, tuned[c.id], d, space, wall))
        gm_dir, gm_cands, gm_wall = search(CONFIG, [], out, "gm",
                                           "search.strategy=global-magnitude",
                                           f"search.global-magnitude.densities={densities}",
                                           f"search.budget={len(densities)}")
        gm_tuned = finetune(gm_dir, [c.id for c in gm_cands], *ft)
        for c in gm_cands:
            rows.append(_row("global-magnitude", c, gm_tuned[c.id],
                             space.weight_density(c.result.arch), space, gm_wall))
    m = machine()
    command = command_line()
    lines = ["| method | weight density | sparse MACs ratio | proxy val | test acc | search s | "
             "fine-tune s |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["density"], r["method"])):
        lines.append(f"| {r['method']} | {r['density']:.4f} | {r['macs_ratio']:.3f} | "
                     f"{100 * r['proxy_val_acc']:.2f} | {100 * r['test_acc']:.2f} | "
                     f"{r['search_s']:.0f} | {r['finetune_s']:.0f} |")
    lines.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch "
                 f"{m['torch']}; {time.perf_counter() - start:.0f} s in all. DASS targets "
                 f"{sorted(TARGETS)} of dense sparse MACs, {args.epochs} epochs each; both "
                 f"methods fine-tuned {args.ft_epochs} epoch(s) with distillation, masks held.")
    save_results("dass", {"command": command, "machine": m, "rows": rows})
    write_section("dass", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(method, cand, tuned, density, space, wall) -> dict:
    return {"method": method, "density": density,
            "macs_ratio": cand.result.macs / space.dense_macs,
            "proxy_val_acc": cand.result.val_score, "test_acc": tuned["test_score"],
            "search_s": wall, "finetune_s": tuned["seconds"]}


if __name__ == "__main__":
    main()
