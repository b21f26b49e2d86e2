"""Training throughput of prunesearch's `train_model` against a bare PyTorch loop on the same
model, data, batch size and optimizer (the physical limit of this machine for that model).

resnet20 on Fashion-MNIST, one epoch over the first `--images` training images, batch 128,
SGD with Nesterov momentum and a cosine schedule; the median of `--repeats` runs. train_model
is measured without augmentation (same work as the bare loop) and with it (the default).

    python benchmarks/train_throughput.py [--images 12800] [--repeats 3]

Writes benchmarks/results/train_throughput.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _machine import command_line, machine, save_results, write_section  # noqa: E402,E501

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import load_run_data  # noqa: E402
from prunesearch.models import build_model  # noqa: E402
from prunesearch.training import train_model  # noqa: E402


def bare_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
              lr: float) -> float:
    """Seconds for one epoch of the plainest loop: permutation, slice, forward, backward."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    steps = len(x) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(x))
    for step in range(steps):
        idx = order[step * batch:(step + 1) * batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(None)
    data = load_run_data(cfg)
    shape, classes = data.input_shape, data.num_classes
    x, y = data.train_x[:args.images], data.train_y[:args.images]
    batch = cfg.model.train.batch_size
    images = (len(x) // batch) * batch
    timings: dict[str, list[float]] = {"bare PyTorch loop": [], "train_model, no augmentation": [],
                                       "train_model, augmentation (default)": []}
    # warm-up (allocator, oneDNN kernels), so the first timed loop pays nothing extra
    bare_loop(build_model(cfg.model.name, shape, classes), x[:10 * batch], y[:10 * batch],
              batch, cfg.model.train.lr)
    for r in range(args.repeats):
        torch.manual_seed(r)
        timings["bare PyTorch loop"].append(
            bare_loop(build_model(cfg.model.name, shape, classes), x, y, batch,
                      cfg.model.train.lr))
        for label, augment in (("train_model, no augmentation", False),
                               ("train_model, augmentation (default)", True)):
            recipe = cfg.model.train.model_copy(update={
                "epochs": 1, "augment": augment, "max_train_images": args.images})
            torch.manual_seed(r)
            report = train_model(build_model(cfg.model.name, shape, classes), data, recipe,
                                 seed=r, device=torch.device("cpu"), progress=False)
            timings[label].append(report.seconds)
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in timings.items()),
              flush=True)
    bare = statistics.median(timings["bare PyTorch loop"])
    m = machine()
    command = command_line()
    lines = ["| loop | images/s (median) | time / bare loop |", "|---|---|---|"]
    rows = {}
    for label, secs in timings.items():
        med = statistics.median(secs)
        rows[label] = {"seconds": secs, "images_per_s": images / med, "ratio_to_bare": med / bare}
        lines.append(f"| {label} | {images / med:.0f} | {med / bare:.3f} |")
    lines.append(f"\n`{command}` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"{m['torch_threads']} torch threads, torch {m['torch']}; {cfg.model.name} on "
                 f"{cfg.data.dataset}, {images} images per epoch, batch {batch}, median of "
                 f"{args.repeats} after a warm-up. train_model's time excludes its final "
                 f"evaluation.")
    save_results("train_throughput",
                 {"command": command, "machine": m, "images": images, "rows": rows})
    write_section("train_throughput", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
