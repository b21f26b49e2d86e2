"""Search strategies on the same evaluation budget: hypervolume, speed to reach it, wall time.

On the default job's model, data and evaluator (resnet20 on Fashion-MNIST, the dense model
from the checkpoint cache or trained once), every strategy gets the same number of candidate
evaluations per seed, with a fresh evaluator cache per run. Reported per strategy: proxy
hypervolume (mean and std over seeds), evaluations to reach 99% of the best hypervolume any run
reached, wall time; plus the hypervolume-versus-evaluations plot.

    python benchmarks/strategies.py [--strategies random,tpe,emo] [--evals 600] [--seeds 0,1,2]

Writes benchmarks/results/strategies.json, strategies_hv.png and its table in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from _machine import machine, write_section  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import make_evaluator, prepare  # noqa: E402
from prunesearch.evaluators import Result  # noqa: E402
from prunesearch.pareto import hypervolume_history  # noqa: E402
from prunesearch.runs.plots import plot_hv_histories  # noqa: E402
from prunesearch.strategies import (  # noqa: E402
    Budget,
    Environment,
    Problem,
    SearchContext,
    create_strategy,
)

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="random,tpe,emo")
    parser.add_argument("--evals", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    names = args.strategies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_config(None)
    prep = prepare(cfg, torch.device("cpu"), progress=False)
    runs = []
    for name in names:
        for seed in seeds:
            evaluator = make_evaluator(cfg, prep.space, prep.model, prep.data)
            recorded: list[Result] = []
            with tempfile.TemporaryDirectory() as tmp:
                ctx = SearchContext(Problem(prep.space, evaluator),
                                    Environment(recorded.append, Path(tmp)), Budget(args.evals),
                                    seed, batch_size=cfg.search.batch_size)
                start = time.perf_counter()
                create_strategy(name, cfg.search.options_of(name)).search(ctx)
                wall = time.perf_counter() - start
            hv = hypervolume_history([r.val_score for r in recorded], [r.macs for r in recorded],
                                     prep.space.dense_macs)
            runs.append({"strategy": name, "seed": seed, "evals": len(recorded),
                         "wall_s": wall, "hv": hv[-1], "hv_history": hv})
            print(f"{name} seed {seed}: {len(recorded)} evals, HV {hv[-1]:.4f}, {wall:.0f} s",
                  flush=True)
    best = max(r["hv"] for r in runs)
    for r in runs:
        reached = [i + 1 for i, h in enumerate(r["hv_history"]) if h >= 0.99 * best]
        r["evals_to_99pct_best"] = reached[0] if reached else None
    table = ["| strategy | hypervolume mean | std | evals to 99% of best HV (per seed) | "
             "wall s mean |", "|---|---|---|---|---|"]
    for name in names:
        mine = [r for r in runs if r["strategy"] == name]
        hvs = [r["hv"] for r in mine]
        table.append(
            f"| {name} | {statistics.fmean(hvs):.4f} | "
            f"{statistics.stdev(hvs) if len(hvs) > 1 else 0.0:.4f} | "
            f"{', '.join(str(r['evals_to_99pct_best'] or 'never') for r in mine)} | "
            f"{statistics.fmean(r['wall_s'] for r in mine):.0f} |")
    m = machine()
    command = "python benchmarks/strategies.py " + " ".join(sys.argv[1:])
    table.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch "
                 f"{m['torch']}; {args.evals} evaluations per run, seeds {seeds}, best HV "
                 f"{best:.4f}; the default job's evaluator (proxy accuracy on 2000 validation "
                 f"images); emo = NSGA-II, population {cfg.search.options_of('emo').pop_size}.")
    text = "\n".join(table) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "strategies.json").write_text(json.dumps(
        {"command": command, "machine": m, "evals": args.evals, "seeds": seeds, "runs": runs},
        indent=1) + "\n")
    plot_hv_histories([(f"{r['strategy']} s{r['seed']}", r["hv_history"]) for r in runs],
                      RESULTS / "strategies_hv.png")
    write_section("strategies", text + "\n![hypervolume vs evaluations](results/"
                  "strategies_hv.png)\n")
    print(text)


if __name__ == "__main__":
    main()
