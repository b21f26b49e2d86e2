"""The supernet stage's peak learning rate, for the default job's short stage: what it does to
the full network and to the proxy scores of fixed subnetworks.

The default job's dense model and its supernet stage (one epoch on the first
`--images` training images) at each `--lrs` (or none); then the full network's test accuracy
and the weight-sharing proxy (validation subset) of the uniform 0.25- and 0.5-width networks,
the smallest one and 12 random ones at or under half the dense MACs (the same for every lr).

    python benchmarks/supernet_lr.py

writes benchmarks/results/supernet_lr.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, device_label, machine, publish, save_results  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare, resolve_device  # noqa: E402
from prunesearch.spaces import Arch, Space  # noqa: E402

RANDOM_ARCHS = 12


def probes(space: Space) -> list[Arch]:
    """Uniform 0.25 and 0.5 widths, the smallest network, and random ones under half MACs."""
    rng = np.random.default_rng(0)
    archs = [space.uniform(0.25), space.uniform(0.5), space.smallest()]
    while len(archs) < 3 + RANDOM_ARCHS:
        arch = space.sample(rng)
        if space.macs(arch) <= 0.5 * space.dense_macs:
            archs.append(arch)
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="none,0.1,0.03,0.01",
                        help="peak learning rates; none: no supernet stage")
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    rows = []
    for lr in args.lrs.split(","):
        stage = (["supernet.epochs=0"] if lr == "none" else
                 ["supernet.epochs=1", f"supernet.lr={lr}",
                  f"supernet.max_train_images={args.images}"])
        start = time.perf_counter()
        prep = prepare(load_config(None, stage), dev, progress=False)
        proxies = [r.val_score for r in prep.evaluator.evaluate(probes(prep.space))]
        meta = prep.supernet_meta or prep.dense_meta
        rows.append({"lr": lr, "full_test_acc": meta["test_score"], "uniform_25": proxies[0],
                     "uniform_50": proxies[1], "smallest": proxies[2],
                     "random_median": statistics.median(proxies[3:]),
                     "seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    m = machine()
    save_results("supernet_lr", {"command": command_line(), "machine": m, "device": str(dev),
                                 "args": vars(args), "rows": rows})
    lines = ["| supernet peak lr | full network test % | proxy: uniform 0.25 / 0.5 width | "
             "smallest | median of 12 random <= 0.5 MACs |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'no stage' if r['lr'] == 'none' else r['lr']} | "
                     f"{100 * r['full_test_acc']:.2f} | {r['uniform_25']:.3f} / "
                     f"{r['uniform_50']:.3f} | {r['smallest']:.3f} | {r['random_median']:.3f} |")
    lines.append(f"\n`{command_line()}` on {m['date']}: {device_label(m, str(dev))}, torch "
                 f"{m['torch']}; the default job's dense resnet20 (3 epochs), one supernet epoch "
                 f"on the first {args.images} training images; proxy = weight sharing, "
                 f"BatchNorm recalibrated, 2000 validation images.")
    publish("supernet_lr", lines)


if __name__ == "__main__":
    main()
