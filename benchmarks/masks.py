"""Weight-mask methods at 50%, 80% and 90% sparsity: layer-adaptive DP against global magnitude,
uniform and random masks (fine-tuned test accuracy), IMP against BiP (accuracy and cost), and
how additive the per-layer output distortion really is.

Every method runs through `prunesearch run` on the same config (configs/masks.toml: resnet20 on
Fashion-MNIST, one density dimension per conv/linear layer, the cached dense model), with the
same fine-tuning for dp / global-magnitude / uniform (labels only, `--ft-epochs`, masks held),
and each point is the method's allocation with the most weights at or under the target
density. random-masks trains ERK random masks from scratch (`--scratch-epochs`); imp prunes 20%
of the remaining weights per round with rewinding and `--round-epochs` per round; bip trains
mask scores and weights jointly from the dense weights for `--round-epochs`. The same is done
for the MLP on mnist1d with its own epochs.

    python benchmarks/masks.py [--only resnet20|mlp]

Writes benchmarks/results/masks.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from _finetuned import finetune, search  # noqa: E402
from _machine import RESULTS, command_line, machine, save_results, write_section  # noqa: E402,E501

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare  # noqa: E402
from prunesearch.runs.finetuned import read_finetuned  # noqa: E402

ROOT = Path(__file__).parent.parent
TARGETS = (0.5, 0.2, 0.1)
TOLERANCE = 0.002  # per-layer rounding of kept weights may overshoot a target by a few weights

SETUPS = {
    "resnet20": {"config": ROOT / "configs" / "masks.toml", "overrides": [],
                 "ft_epochs": 1, "scratch_epochs": 3, "round_epochs": 1, "imp_rounds": 11},
    "mlp": {"config": ROOT / "configs" / "masks.toml",
            "overrides": ["data.dataset=mnist1d", "model.name=mlp", "model.train.epochs=20",
                          "model.train.batch_size=100", "evaluator.val_images=500"],
            "ft_epochs": 5, "scratch_epochs": 20, "round_epochs": 5, "imp_rounds": 11},
}


def _at_target(space, candidates, target: float):
    under = [c for c in candidates if c.result.ok
             and space.weight_density(c.result.arch) <= target + TOLERANCE]
    return max(under, key=lambda c: (space.weight_density(c.result.arch), c.result.val_score))


def bench(model: str, setup: dict, out: Path) -> dict:
    cfg = load_config(setup["config"], setup["overrides"])
    prep = prepare(cfg, torch.device("cpu"), progress=False)
    space, meta = prep.space, prep.dense_meta
    masked_weights = sum(space.layer_weights.values())
    other_params = space.dense_params - masked_weights
    rows: list[dict] = []
    ft = [f"finetune.epochs={setup['ft_epochs']}", "finetune.kd=false"]

    # weight-sharing allocations, then the same fine-tuning for each at each target
    param_targets = [(t * masked_weights + other_params) / space.dense_params for t in TARGETS]
    extra = {"dp": [f"search.dp.targets={param_targets}", "search.dp.cost=params"],
             "global-magnitude": [f"search.global-magnitude.densities={list(TARGETS)}"],
             "uniform": []}
    additivity = None
    for method, opts in extra.items():
        run_dir, cands, search_s = search(setup["config"], setup["overrides"], out, method,
                                          f"search.strategy={method}", *opts)
        picks = {t: _at_target(space, cands, t) for t in TARGETS}
        start = time.perf_counter()
        tuned = finetune(run_dir, [c.id for c in picks.values()], *ft)
        for t, c in picks.items():
            r = tuned[c.id]
            rows.append({"model": model, "method": method, "target": t,
                         "density": space.weight_density(c.result.arch),
                         "macs_ratio": c.result.macs / space.dense_macs,
                         "proxy_val_acc": c.result.val_score, "test_acc": r["test_score"],
                         "epochs": setup["ft_epochs"], "train_s": r["seconds"],
                         "search_s": search_s})
        if method == "dp":
            table = json.loads((run_dir / "dp_distortion.json").read_text())
            additivity = {k: table["additivity"][k] for k in ("samples", "pearson", "spearman")}
            additivity["table_seconds"] = table["table_seconds"]
            additivity["solve_ms"] = 1e3 * table["solve_seconds"]
            additivity["us_per_budget"] = 1e6 * table["seconds_per_budget"]
        print(f"{model} {method}: done in {time.perf_counter() - start:.0f} s fine-tuning",
              flush=True)

    # networks trained by the strategy itself
    trained = {
        "random-masks": [f"search.random-masks.densities={list(TARGETS)}",
                         "search.random-masks.distribution=erk",
                         f"search.random-masks.epochs={setup['scratch_epochs']}"],
        "imp": [f"search.budget={setup['imp_rounds'] + 1}",
                f"search.imp.epochs={setup['round_epochs']}"],
        "bip": [f"search.bip.densities={list(TARGETS[1:])}",
                f"search.bip.epochs={setup['round_epochs']}"],
    }
    for method, opts in trained.items():
        run_dir, _, wall = search(setup["config"], setup["overrides"], out, method,
                                  f"search.strategy={method}", *opts)
        tuned = [{**r, "density": _exact_density(run_dir, r)}
                 for r in read_finetuned(run_dir) if r["variant"] == method]
        for t in TARGETS:  # IMP's rounds step by 0.8, so one lies in [0.8 t, t]
            under = [r for r in tuned if 0.79 * t <= r["density"] <= t + TOLERANCE]
            if not under:
                continue
            r = max(under, key=lambda r: r["density"])
            rows.append({"model": model, "method": method, "target": t,
                         "density": r["density"], "macs_ratio": r["macs_ratio"],
                         "proxy_val_acc": r["proxy_val_score"], "test_acc": r["test_score"],
                         "epochs": r["epochs"], "train_s": r["seconds"], "search_s": wall})
        print(f"{model} {method}: {wall:.0f} s", flush=True)
    return {"model": model, "dataset": cfg.data.dataset, "dense_test_acc": meta.get("test_score"),
            "dense_epochs": cfg.model.train.epochs, "rows": rows, "additivity": additivity}


def _exact_density(run_dir: Path, row: dict) -> float:
    """Overall density of the saved network's conv/linear weights (its real masks)."""
    state = torch.load(run_dir / row["weights"], weights_only=True)
    ws = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    return sum(int(torch.count_nonzero(w)) for w in ws) / sum(w.numel() for w in ws)


def _table(result: dict) -> list[str]:
    lines = [f"**{result['model']} on {result['dataset']}** (dense: "
             f"{100 * result['dense_test_acc']:.2f}% test after {result['dense_epochs']} epochs)",
             "", "| method | target density | density | sparse MACs ratio | proxy val | test acc "
             "| training epochs | training s |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (-r["target"], r["method"])):
        lines.append(f"| {r['method']} | {r['target']} | {r['density']:.4f} | "
                     f"{r['macs_ratio']:.3f} | {100 * r['proxy_val_acc']:.2f} | "
                     f"{100 * r['test_acc']:.2f} | {r['epochs']} | {r['train_s']:.1f} |")
    add = result["additivity"]
    if add:
        lines.append(f"\nAdditivity of output distortion over {add['samples']} random "
                     f"allocations: Pearson {add['pearson']:.3f}, Spearman {add['spearman']:.3f}"
                     f" (distortion table: {add['table_seconds']:.1f} s; DP over all bins "
                     f"{add['solve_ms']:.1f} ms, then {add['us_per_budget']:.0f} us per budget).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETUPS))
    args = parser.parse_args()
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, setup in SETUPS.items():
            if args.only in (None, model):
                results.append(bench(model, setup, Path(tmp) / model))
                RESULTS.mkdir(exist_ok=True)  # kept as it goes: a later failure loses nothing
                (RESULTS / "masks_partial.json").write_text(json.dumps(results, indent=1))
    m = machine()
    command = command_line()
    text = []
    for result in results:
        text += _table(result) + [""]
    text.append(f"`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch "
                f"{m['torch']}; {time.perf_counter() - start:.0f} s in all. Fine-tuning: labels "
                f"only, masks held; dp/global-magnitude/uniform/bip start from the dense "
                f"weights, random-masks from scratch; imp's epochs count every round from its "
                f"own dense training.")
    save_results("masks", {"command": command, "machine": m, "results": results})
    (RESULTS / "masks_partial.json").unlink(missing_ok=True)
    write_section("masks", "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
