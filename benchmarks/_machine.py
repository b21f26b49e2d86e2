"""Where a benchmark ran: committed next to every result. Importing it sets malloc as the
`prunesearch` command does (prunesearch/allocator.py), so benchmarks time what users run."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from prunesearch.allocator import allocator_settings, keep_freed_memory

keep_freed_memory()


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.date.today().isoformat(),
        "allocator": allocator_settings(),
    }


def device_label(m: dict[str, object], device: str) -> str:
    """The machine a table's figures came from, in words: the GPU's name on CUDA, else the CPU."""
    return str(m["cuda"]) if device.startswith("cuda") else f"{m['cpu']}, {m['cores']} cores"


def mean_std(fractions: list[float]) -> str:
    """Accuracies (fractions) as 'mean +- std' in percent; the mean alone for one value."""
    text = f"{100 * statistics.mean(fractions):.2f}"
    return text + (f" +- {100 * statistics.stdev(fractions):.2f}" if len(fractions) > 1 else "")


def command_line() -> str:
    """The command that ran this benchmark, as committed beside its results."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


RESULTS = Path(__file__).parent / "results"


def save_results(name: str, payload: dict[str, Any]) -> None:
    """Write a benchmark's raw results to results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")


README = Path(__file__).parent / "README.md"


def write_section(name: str, markdown: str) -> None:
    """Replace the `name` section of benchmarks/README.md (between its markers) by `markdown`:
    re-running a benchmark rewrites its table, nobody edits results by hand. Benchmarks write
    only under benchmarks/: this README and results/."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = README.read_text()
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{start}\n{markdown.rstrip()}\n{end}{tail}")


def publish(name: str, lines: list[str]) -> None:
    """Write a benchmark's table (markdown lines) into its section of benchmarks/README.md and
    print it."""
    table = "\n".join(lines) + "\n"
    write_section(name, table)
    print(table)
