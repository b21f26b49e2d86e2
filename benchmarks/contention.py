"""A fine-tuning epoch alone and beside one other CPU-bound process, per thread setting.

The epoch is the default job's fine-tuning unit: resnet20 at half width (a mid-front point),
one epoch over the first 10000 Fashion-MNIST training images, batch 128, with augmentation.
Each measurement runs in a fresh child process so OpenMP reads its settings at start-up:

- `spin`: torch's defaults (one thread per core, OpenMP's default wait policy, whose idle
  threads spin before they sleep), the setting before `prunesearch` set any;
- `passive`: OMP_WAIT_POLICY=PASSIVE (what the `prunesearch` command sets unless the user
  exported a policy), threads per core as before;
- `1 thread`: `prunesearch --threads 1` (OMP_NUM_THREADS=1), passive.

The other process is a pure-Python busy loop (one core at 100%, like any CPU-bound job). The
slowdown is the epoch's time beside it over its time alone, with the same setting.

    python benchmarks/contention.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, publish, save_results  # noqa: E402

SETTINGS: dict[str, dict[str, str]] = {
    "spin": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}
IMAGES, WIDTH = 10000, 0.5


def epoch_seconds() -> float:
    """Child process: time one fine-tuning epoch (data loading and model building excluded)."""
    from prunesearch.data import load_dataset
    from prunesearch.models import build_model
    from prunesearch.models.options import TrainConfig
    from prunesearch.training import train_model

    data = load_dataset("fashion-mnist")
    model = build_model("resnet20", data.input_shape, data.num_classes, WIDTH)
    recipe = TrainConfig(epochs=1, max_train_images=IMAGES)
    t = time.perf_counter()
    train_model(model, data, recipe, seed=0, device="cpu", progress=False)
    return time.perf_counter() - t


def measure(setting: dict[str, str], busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(setting)
    other = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None)
    try:
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        if other is not None:
            other.kill()
            other.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/contention.py")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(epoch_seconds())
        return
    rows: list[dict[str, Any]] = []
    for name, setting in SETTINGS.items():
        alone, beside = measure(setting, busy=False), measure(setting, busy=True)
        rows.append({"setting": name, "env": setting, "alone_s": alone, "beside_busy_s": beside,
                     "slowdown": beside / alone})
        print(json.dumps(rows[-1]), flush=True)
    m = machine()
    save_results("contention", {"command": command_line(), "machine": m, "images": IMAGES,
                                "width_mult": WIDTH, "rows": rows})
    spin = rows[0]["alone_s"]
    lines = [f"`{command_line()}` on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
             f"{m['date']}: one fine-tuning epoch (resnet20 x{WIDTH}, {IMAGES} images).", "",
             "| setting | alone (s) | beside a busy process (s) | slowdown | alone vs spin |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['alone_s']:.1f} | {r['beside_busy_s']:.1f} | "
              f"{r['slowdown']:.2f}x | {r['alone_s'] / spin:.2f}x |" for r in rows]
    publish("contention", lines)


if __name__ == "__main__":
    main()
