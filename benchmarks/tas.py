"""TAS against uniform width and the best EMO point at about 50% and 25% of dense MACs, all
fine-tuned the same way (the default job's fine-tuning: distillation, `--ft-epochs`).

On the default job's model and data (resnet20 on Fashion-MNIST, the cached dense model): TAS
searches each target for `--epochs` epochs; uniform width and EMO (the default job's budget)
search with weight sharing; the point of each method nearest each target (TAS: its result;
uniform: the nearest uniform width; EMO: the best proxy point at or under the target) is
fine-tuned and tested. Search wall time is reported per method.

    python benchmarks/tas.py [--epochs 3] [--ft-epochs 1]

Writes benchmarks/results/tas.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import finetune, search  # noqa: E402
from _machine import command_line, machine, save_results, write_section  # noqa: E402,E501

TARGETS = (0.5, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ft-epochs", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    ft = [f"finetune.epochs={args.ft_epochs}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        runs = {
            "tas": search(None, [], out, "tas", "search.strategy=tas",
                          f"search.tas.targets={list(TARGETS)}",
                          f"search.tas.epochs={args.epochs}"),
            "uniform": search(None, [], out, "uniform", "search.strategy=uniform"),
            "emo": search(None, [], out, "emo", "search.strategy=emo"),
        }
        for method, (run_dir, cands, wall) in runs.items():
            ok = [c for c in cands if c.result.ok]
            dense = json.loads((run_dir / "summary.json").read_text())["dense"]["macs"]
            picks = {}
            for t in TARGETS:
                if method == "emo":
                    under = [c for c in ok if c.result.macs <= t * dense]
                    picks[t] = max(under, key=lambda c: c.result.val_score)
                else:  # tas: its result for t; uniform: the nearest width
                    picks[t] = min(ok, key=lambda c, t=t: abs(c.result.macs / dense - t))
            tuned = finetune(run_dir, [c.id for c in picks.values()], *ft)
            for t, c in picks.items():
                r = tuned[c.id]
                rows.append({"method": method, "target": t, "macs_ratio": r["macs_ratio"],
                             "params": r["params"], "proxy_val_acc": c.result.val_score,
                             "test_acc": r["test_score"], "search_s": wall,
                             "finetune_s": r["seconds"]})
            print(f"{method}: {[round(r['test_acc'], 4) for r in rows[-len(TARGETS):]]}",
                  flush=True)
    m = machine()
    command = command_line()
    lines = ["| method | target | MACs ratio | params | proxy val | test acc | search s | "
             "fine-tune s |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["target"], r["method"])):
        lines.append(f"| {r['method']} | {r['target']} | {r['macs_ratio']:.3f} | "
                     f"{r['params']} | {100 * r['proxy_val_acc']:.2f} | "
                     f"{100 * r['test_acc']:.2f} | {r['search_s']:.0f} | "
                     f"{r['finetune_s']:.0f} |")
    lines.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch "
                 f"{m['torch']}; {time.perf_counter() - start:.0f} s in all. resnet20 on "
                 f"Fashion-MNIST (dense 3 epochs); TAS {args.epochs} epochs per target; every "
                 f"point fine-tuned {args.ft_epochs} epoch(s) with distillation from the dense "
                 f"model; EMO = the default job's budget with NSGA-II.")
    save_results("tas", {"command": command, "machine": m, "rows": rows})
    write_section("tas", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
