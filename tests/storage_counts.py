"""SQL statements per candidate of a shared run, counted in this process (tests/test_workers.py
holds them to the budget; benchmarks/workers.py reports them)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from prunesearch.app.config import load_config
from prunesearch.app.run import run_job


class StatementCounter:
    """SQL statements (and their seconds) executed by every engine in this process while
    it is installed."""

    def __init__(self) -> None:
        self.statements, self.seconds = 0, 0.0

    def __enter__(self) -> StatementCounter:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info["prunesearch_t"] = time.perf_counter()

    def _after(self, conn: Any, *_: Any) -> None:
        self.statements += 1
        self.seconds += time.perf_counter() - conn.info.pop("prunesearch_t")


def statements_per_candidate(config: Path | None, overrides: list[str], storage: str,
                             out: Path, budgets: tuple[int, int] = (8, 24)) -> dict[str, float]:
    """A run's statements per candidate in the steady state: two runs of the same job whose
    budgets differ, the difference of their counts over the difference of budgets (set-up,
    the dense model and the study's creation, cancels out); and the mean statement's ms."""
    counts = []
    for budget in budgets:
        name = f"count-{time.time_ns()}"
        cfg = load_config(config, [*overrides, f"search.budget={budget}", f"name={name}",
                                   f"search.storage={json.dumps(storage)}"])
        with StatementCounter() as counter:
            run_job(cfg, out, progress=False)
        counts.append((counter.statements, counter.seconds))
    (s1, t1), (s2, t2) = counts
    return {"statements_per_candidate": round((s2 - s1) / (budgets[1] - budgets[0]), 2),
            "mean_statement_ms": round(1000 * (t1 + t2) / (s1 + s2), 3)}
