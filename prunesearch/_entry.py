"""The `prunesearch` console script. OpenMP reads its wait policy once, when torch loads it, so
the policy is set here, before anything imports torch: worker threads that finish a parallel
region sleep instead of spinning (spinning threads beside one other CPU-bound process on 2
cores made a fine-tuning epoch take 399 s instead of about 60 s; benchmarks/contention.py
measures each setting). An OMP_WAIT_POLICY the user exported wins."""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from prunesearch.cli import main as cli_main

    cli_main()
