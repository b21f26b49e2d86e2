"""The `prunesearch` console script. OpenMP reads its wait policy once, when torch loads it, so
the policy is set here, before anything imports torch: worker threads that finish a parallel
region sleep instead of spinning, so a job beside a busy process loses far less time, for a
little more time alone (measured in benchmarks/contention.py). An OMP_WAIT_POLICY the user
exported wins. malloc keeps freed tensors' memory (prunesearch/allocator.py): fewer page
faults, faster and steadier forwards."""

from __future__ import annotations

import os

from prunesearch.allocator import keep_freed_memory


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_freed_memory()
    from prunesearch.cli import main as cli_main

    cli_main()
