"""Which distillation settings make fine-tuning worth its time: labels only against knowledge
distillation at several (alpha, temperature), and one at a fifth of the recipe's learning rate
(inherited weights may not want the dense schedule's restart), on the same searched
architectures.

resnet20 on Fashion-MNIST, the default job's dense model (`--dense-epochs`), the supernet stage
(`--supernet-epochs`) and its TPE search; the best proxy point at or under each `--targets`
MACs ratio is fine-tuned `--ft-epochs` from the sliced weights, once per setting and seed, with
distillation from the full network it was cut from. Test accuracy on the 10000 test images,
which nothing chose from.

    python benchmarks/kd_settings.py

writes benchmarks/results/kd_settings.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import (  # noqa: E402
    add_job_arguments,
    full_finetune_recipe,
    searched,
    training_overrides,
)
from _machine import (  # noqa: E402
    command_line,
    device_label,
    machine,
    mean_std,
    publish,
    save_results,
)

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import resolve_device  # noqa: E402
from prunesearch.training import Distillation, train_model  # noqa: E402

# (name, (alpha, temperature) or None for labels only, learning rate as a share of the recipe's)
SETTINGS = [("labels only", None, 1.0), ("kd 0.9 / T 4", (0.9, 4.0), 1.0),
            ("kd 0.5 / T 4", (0.5, 4.0), 1.0), ("kd 0.5 / T 1", (0.5, 1.0), 1.0),
            ("kd 1.0 / T 1", (1.0, 1.0), 1.0), ("kd 0.5 / T 4, lr x0.2", (0.5, 4.0), 0.2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    add_job_arguments(parser)
    parser.add_argument("--supernet-epochs", type=int, default=1)
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--targets", default="0.25,0.1")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    start = time.perf_counter()
    base = [*training_overrides(args.model, args.dense_epochs, args.max_train_images),
            f"search.budget={args.search_budget}",
            f"supernet.epochs={args.supernet_epochs}"]
    recipe = full_finetune_recipe(load_config(None, base), args.ft_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        found = searched(base, Path(tmp), "kd-settings", dev)
    slicer = found.prep.space.slicer(found.prep.model)
    rows = []
    for target in targets:
        arch = found.best_under(target)
        macs = found.prep.space.macs(arch) / found.prep.space.dense_macs
        for name, kd, lr_share in SETTINGS:
            distill = None if kd is None else Distillation(found.prep.model, kd[1], kd[0])
            tuned = recipe.model_copy(update={"lr": recipe.lr * lr_share})
            accs = [train_model(slicer.build(arch), found.prep.data, tuned, seed=seed,
                                device=dev, progress=False, distill=distill).test_score
                    for seed in seeds]
            rows.append({"target": target, "macs_ratio": macs, "setting": name, "test_acc": accs})
            print(rows[-1], flush=True)
    m = machine()
    save_results("kd_settings", {"command": command_line(), "machine": m, "device": str(dev),
                                 "args": vars(args), "rows": rows})
    device = device_label(m, str(dev))
    lines = ["| target | MACs ratio | fine-tuning loss | test acc % (mean +- std) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['macs_ratio']:.3f} | {r['setting']} | "
                     f"{mean_std(r['test_acc'])} |")
    lines.append(f"\n`{command_line()}` on {m['date']}: {device}, torch {m['torch']}; "
                 f"{(time.perf_counter() - start) / 60:.0f} min; {args.model}, dense "
                 f"{args.dense_epochs} epochs, supernet {args.supernet_epochs}, fine-tuning "
                 f"{args.ft_epochs} epochs; seeds {seeds}. alpha weighs the distillation term, "
                 f"1 - alpha the labels.")
    publish("kd_settings", lines)


if __name__ == "__main__":
    main()
