"""Peak memory of the default job (`prunesearch run`) against the machine's RAM and its data.

Runs the embedded default job in a child process with an empty checkpoint cache (so the dense
training is part of it) and reads the child's peak resident set size from the kernel
(wait4's ru_maxrss); samples VmRSS every 0.5 s for a timeline. For scale, the same is measured
for a child that only imports torch and prunesearch, and the in-memory dataset's size is given:
Fashion-MNIST as float32 tensors (train + validation + test).

    python benchmarks/memory_peak.py

Writes benchmarks/results/memory_peak.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, save_results, write_section  # noqa: E402,E501

MIB = 2**20
FMNIST_FLOAT32_BYTES = 70_000 * 28 * 28 * 4


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_of(command: list[str], env: dict[str, str]) -> tuple[int, list[list[float]]]:
    """(peak RSS bytes, [[seconds, RSS MiB], ...]) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    timeline = []
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        rss = rss_bytes(child.pid)
        if rss is not None:
            timeline.append([round(time.perf_counter() - start, 1), round(rss / MIB, 1)])
        time.sleep(0.5)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit {status}")
    return usage.ru_maxrss * 1024, timeline


def total_ram() -> int:
    line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PRUNESEARCH_CACHE": tmp}
        imports, _ = peak_of([sys.executable, "-c", "import torch, prunesearch.app.run"],
                                env)
        job, timeline = peak_of(
            [sys.executable, "-m", "prunesearch", "run", "--quiet", "--out", f"{tmp}/runs"], env)
    ram = total_ram()
    m = machine()
    result = {"command": command_line(), "machine": m,
              "peak_rss_bytes": job, "imports_rss_bytes": imports,
              "dataset_float32_bytes": FMNIST_FLOAT32_BYTES, "total_ram_bytes": ram,
              "timeline_s_mib": timeline}
    save_results("memory_peak", result)
    table = "\n".join([
        "| figure | value |", "|---|---|",
        f"| peak RSS, default job | {job / MIB:.0f} MiB |",
        f"| share of this machine's RAM ({ram / 2**30:.1f} GiB) | {job / ram:.3f} |",
        f"| peak RSS of importing torch + prunesearch only | {imports / MIB:.0f} MiB |",
        f"| job peak above imports / dataset as float32 ({FMNIST_FLOAT32_BYTES / MIB:.0f} MiB)"
        f" | {(job - imports) / FMNIST_FLOAT32_BYTES:.2f} |",
        "",
        f"`{result['command']}` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch "
        f"{m['torch']}; the default job (resnet20, Fashion-MNIST, TPE 240 candidates, 3 "
        f"fine-tuned points) with an empty checkpoint cache; RSS timeline in "
        f"results/memory_peak.json."]) + "\n"
    write_section("memory_peak", table)
    print(table)


if __name__ == "__main__":
    main()
