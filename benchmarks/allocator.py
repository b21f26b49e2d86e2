"""Page faults and time of repeated forwards under glibc's default malloc and under the
settings the `prunesearch` command makes (prunesearch/allocator.py).

Each measurement is a fresh interpreter (malloc's settings last for a process): mobilenetv2_small
at batch 64 on 28x28 inputs, one warm-up forward, then 8 timed forwards; the row gives the
median (and range) over the processes, since one process's count moves with the kernel's page
reclaim and glibc's dynamic mmap threshold.

    python benchmarks/allocator.py --processes 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, publish, save_results  # noqa: E402

from prunesearch.allocator import is_malloc_setting  # noqa: E402

FORWARDS = 8
CHILD = f"""
import json, resource, sys, time, torch
from prunesearch.allocator import allocator_settings, keep_freed_memory
if sys.argv[1] == "tuned":
    keep_freed_memory()
from prunesearch.models import build_model
model = build_model("mobilenetv2_small", (1, 28, 28), 10).eval()
x = torch.zeros(64, 1, 28, 28)
with torch.no_grad():
    model(x)
    before, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range({FORWARDS}):
        model(x)
    ms = (time.perf_counter() - t) * 1000 / {FORWARDS}
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"faults": faults, "ms": ms, "settings": allocator_settings()}}))
"""


def one_process(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not is_malloc_setting(k)}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/allocator.py --processes 9")
    parser.add_argument("--processes", type=int, default=9, help="fresh processes per setting")
    args = parser.parse_args()
    rows = []
    for mode in ("default", "tuned"):
        runs = [one_process(mode) for _ in range(args.processes)]
        faults, ms = [r["faults"] for r in runs], [r["ms"] for r in runs]
        rows.append({"mode": mode, "settings": runs[0]["settings"], "faults": faults, "ms": ms})
        print(json.dumps(rows[-1]), flush=True)
    m = machine()
    save_results("allocator", {"command": command_line(), "machine": m, "forwards": FORWARDS,
                               "rows": rows})
    lines = [f"`{command_line()}` on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
             f"{m['date']}: mobilenetv2_small, batch 64, {FORWARDS} forwards after a warm-up, "
             f"{args.processes} fresh processes per setting.", "",
             f"| malloc | page faults per {FORWARDS} forwards, median (min-max) | ms per forward, "
             "median (min-max) |", "|---|---:|---:|"]
    for r in rows:
        f, t = r["faults"], r["ms"]
        lines.append(f"| {r['settings']} | {statistics.median(f):.0f} ({min(f)}-{max(f)}) | "
                     f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f}) |")
    publish("allocator", lines)


if __name__ == "__main__":
    main()
