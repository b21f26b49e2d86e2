"""Does shrinking a network gradually while it trains beat cutting it at once? (Not kept.)

On the one-schedule dense resnet20 (3 epochs of a 6-epoch cosine, what `peers.py`'s
one-schedule rows start from), the architecture prunesearch's search picked under each MACs
target (read from benchmarks/results/peers_resnet20.json) trains the 3 epochs left of the
schedule in one of two ways:

- oneshot: cut (first-k channels of the space's order, blocks dropped) and trained 3 epochs,
  as the product fine-tunes;
- shrink1: the first epoch trains the whole network as a masked supernet whose widths and
  depths step down from full to the target's on a cubic ramp (Zhu & Gupta's gradual pruning)
  over the first 70% of the epoch's steps and hold there; the network is then cut and trains
  the 2 epochs left.

Test accuracy on the 10000 test images. Prints one line per run.

    python benchmarks/gradual_shrink.py --targets 0.25,0.1 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _finetuned import training_overrides  # noqa: E402
from _machine import RESULTS  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import prepare  # noqa: E402
from prunesearch.spaces import Arch, Space  # noqa: E402
from prunesearch.spaces.supernet import Sample, Supernet  # noqa: E402
from prunesearch.training import train_model  # noqa: E402
from prunesearch.training.loop import ScheduleSpan  # noqa: E402

DENSE, SCHEDULE = 3, 6
RAMP = 0.7  # of the shrinking epoch's steps


def shrunk_sample(space: Space, arch: Arch, done: float) -> Sample:
    """The supernet sample `done` (0..1) of the way from the full network to `arch`: each
    width or depth at the smallest choice no smaller than its interpolated value."""
    sample = {}
    for d, (dim, g) in enumerate(zip(space.dims, space.encode(arch), strict=True)):
        if dim.kind not in ("width", "depth"):
            continue
        wanted = dim.full - done * (dim.full - dim.choices[g])
        gene = min(i for i, c in enumerate(dim.choices) if c >= wanted - 1e-9)
        if dim.choices[gene] != dim.full:
            sample[d] = [(gene, 1.0)]
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="0.25,0.1")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    dev = torch.device("cpu")
    cfg = load_config(None, training_overrides("resnet20", DENSE, None)
                      + ["supernet.epochs=0", f"model.train.schedule_epochs={SCHEDULE}"])
    prep = prepare(cfg, dev, progress=False)
    space, dense, data, recipe = prep.space, prep.model, prep.data, cfg.model.train
    print(f"dense test {prep.dense_meta.get('test_score')}", flush=True)
    rows = json.loads((RESULTS / "peers_resnet20.json").read_text())["budgets"]["D3F3"]["rows"]
    picks = {r["target"]: Arch.from_dict(r["arch"]) for r in rows
             if r["method"] == "prunesearch one-schedule"}
    left = SCHEDULE - DENSE
    for target in [float(t) for t in args.targets.split(",")]:
        arch = picks[target]
        for variant in ("oneshot", "shrink1"):
            for seed in [int(s) for s in args.seeds.split(",")]:
                start = time.perf_counter()
                if variant == "oneshot":
                    student = space.slicer(dense).build(arch)
                    report = train_model(student, data, recipe.model_copy(update={"epochs": left}),
                                         seed=seed, device=dev, progress=False,
                                         span=ScheduleSpan(DENSE, SCHEDULE, left))
                else:
                    net = Supernet(space, dense, space.channel_order(), hard=True)
                    ramp = max(1, int(RAMP * (len(data.train_x) // recipe.batch_size)))

                    def on_step(k: int, net: Supernet = net, ramp: int = ramp,
                                arch: Arch = arch) -> None:
                        p = min(1.0, k / ramp)
                        net.sample = shrunk_sample(space, arch, 1 - (1 - p) ** 3)
                    train_model(net, data, recipe.model_copy(update={"epochs": 1}), seed=seed,
                                device=dev, progress=False, on_step=on_step,
                                span=ScheduleSpan(DENSE, SCHEDULE, 1))
                    net.sample = {}
                    student = space.slicer(net.net).build(arch)
                    report = train_model(student, data,
                                         recipe.model_copy(update={"epochs": left - 1}),
                                         seed=seed + 100, device=dev, progress=False,
                                         span=ScheduleSpan(DENSE + 1, SCHEDULE, left - 1))
                print(f"target {target} {variant} seed {seed}: test {report.test_score:.4f} "
                      f"val {report.val_score:.4f} ({time.perf_counter() - start:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
