"""Shared-study throughput on this machine, and what one candidate costs in storage round trips.

A random search over the default job's space (resnet20 on Fashion-MNIST, the default evaluator
settings) on dense weights of a quick model (1 epoch on 5000 images: what a candidate costs to
evaluate does not depend on the weights), no supernet, no fine-tuning:

- baseline: one `prunesearch run` with torch's default threads, no storage;
- shared: `prunesearch --threads 1 run --storage URL` and 0, 1 or 3 `prunesearch --threads 1
  worker` processes beside it (1, 2 and 4 processes with one thread each), on a throwaway
  PostgreSQL server (tests/pg_cluster.py) unless --storage names one.

Throughput is candidates per second of the run's search phase (summary.json timings.search_s),
given as a ratio to the baseline. Round trips: SQL statements per candidate and their mean
time, counted with SQLAlchemy's cursor events in in-process shared runs of two budgets (the
difference divided by the difference of budgets, so set-up is not counted), for random (each
process samples) and emo (the run enqueues, processes take). From these, the simulated cost of
N workers on M machines: per candidate a worker spends eval + statements x RTT, so efficiency =
eval / (eval + statements x RTT), and the server must answer N x statements / (eval +
statements x RTT) statements per second.

    python benchmarks/workers.py [--budget 48] [--storage URL]

Writes benchmarks/results/workers.json and the README section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _machine import command_line, machine, publish, save_results  # noqa: E402
from pg_cluster import throwaway_postgres  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.run import run_job  # noqa: E402

QUICK = ["model.train.epochs=1", "model.train.max_train_images=5000", "supernet.epochs=0",
         "finetune.enabled=false", "search.strategy=random"]
RTTS_MS = (0.2, 1.0, 20.0)  # same rack, LAN, across regions
WORKERS = (4, 16, 64)


def _cli(threads: int | None, *args: str) -> list[str]:
    return [sys.executable, "-m", "prunesearch",
            *(["--threads", str(threads)] if threads else []), *args]


def _sets(pairs: list[str]) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def _timed_run(out: Path, name: str, budget: int, threads: int | None,
               storage: str | None, n_workers: int) -> dict[str, Any]:
    """One run (and its workers): candidates per second of its search phase."""
    sets = _sets([*QUICK, f"name={name}", f"search.budget={budget}"])
    workers = [subprocess.Popen(_cli(1, "worker", "--storage", storage, "--study", name),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(n_workers)] if storage else []
    run = subprocess.run(_cli(threads, "run", "--out", str(out), "--quiet", *sets,
                              *(["--storage", storage] if storage else [])),
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{run.stderr[-3000:]}")
    for w in workers:
        if w.wait(timeout=120) != 0:
            raise SystemExit(f"a worker of {name} failed:\n{w.stderr.read()[-3000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    seconds = summary["timings"]["search_s"]
    return {"processes": max(1, n_workers + 1), "threads_each": threads or "default",
            "storage": bool(storage), "candidates": summary["n_evals"],
            "search_s": round(seconds, 2), "per_s": round(summary["n_evals"] / seconds, 3)}


class _Counter:
    """SQL statements (and their seconds) executed by every engine in this process."""

    def __init__(self) -> None:
        self.statements, self.seconds = 0, 0.0
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info["prunesearch_t"] = time.perf_counter()

    def _after(self, conn: Any, *_: Any) -> None:
        self.statements += 1
        self.seconds += time.perf_counter() - conn.info.pop("prunesearch_t")


def _round_trips(out: Path, storage: str, strategy: str, budgets: tuple[int, int],
                 counter: _Counter) -> dict[str, Any]:
    counts = []
    for budget in budgets:
        before = (counter.statements, counter.seconds)
        overrides = [*QUICK, f"search.strategy={strategy}", f"search.budget={budget}",
                     f"name=rt-{strategy}-{budget}", "search.batch_size=8"]
        cfg = load_config(None, [*overrides, f"search.storage={json.dumps(storage)}"])
        run_job(cfg, out, progress=False)
        counts.append((counter.statements - before[0], counter.seconds - before[1]))
    (s1, t1), (s2, t2) = counts
    per = (s2 - s1) / (budgets[1] - budgets[0])
    return {"strategy": strategy, "statements_per_candidate": round(per, 1),
            "mean_statement_ms": round(1000 * (t1 + t2) / (s1 + s2), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/workers.py --budget 48")
    parser.add_argument("--budget", type=int, default=48, help="candidates per timed run")
    parser.add_argument("--storage", help="an existing PostgreSQL URL (default: a throwaway "
                                          "server)")
    args = parser.parse_args()
    with ExitStack() as stack:
        storage = args.storage or stack.enter_context(throwaway_postgres())
        out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        os.environ.setdefault("PRUNESEARCH_CACHE", str(out / "cache"))
        # the dense checkpoint first, so no timed run trains it
        subprocess.run(_cli(None, "train", *_sets(QUICK)), check=True, capture_output=True)
        tag = str(int(time.time()))
        rows = [_timed_run(out, f"base-{tag}", args.budget, None, None, 0)]
        for n in (1, 2, 4):
            rows.append(_timed_run(out, f"w{n}-{tag}", args.budget, 1, storage, n - 1))
        for row in rows:
            row["ratio"] = round(row["per_s"] / rows[0]["per_s"], 3)
        counter = _Counter()
        trips = [_round_trips(out, storage, s, (8, 24), counter) for s in ("random", "emo")]
    eval_s = 1.0 / rows[1]["per_s"]  # one process, one thread: a candidate's evaluation
    simulated = []
    for trip in trips:
        for rtt in RTTS_MS:
            cost = eval_s + trip["statements_per_candidate"] * rtt / 1000
            simulated.append({"strategy": trip["strategy"], "rtt_ms": rtt,
                              "efficiency": round(eval_s / cost, 3),
                              "server_statements_per_s": {
                                  str(n): round(n * trip["statements_per_candidate"] / cost)
                                  for n in WORKERS}})
    payload = {"command": command_line(), "machine": machine(), "budget": args.budget,
               "rows": rows, "round_trips": trips, "eval_s": round(eval_s, 4),
               "simulated": simulated}
    save_results("workers", payload)
    lines = [f"`{payload['command']}` on {payload['machine']['cpu']}, "
             f"{payload['machine']['cores']} cores, {payload['machine']['date']}: a random "
             f"search of {args.budget} candidates.", "",
             "| processes | threads each | storage | search s | candidates/s | ratio to one "
             "process |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['threads_each']} | "
              f"{'PostgreSQL' if r['storage'] else 'none'} | {r['search_s']} | {r['per_s']} | "
              f"{r['ratio']} |" for r in rows]
    lines += ["", f"Storage round trips (a candidate's evaluation: {eval_s:.3f} s at one "
              f"thread):", "", "| strategy | SQL statements per candidate | mean statement ms "
              "(local server) |", "|---|---|---|"]
    lines += [f"| {t['strategy']} | {t['statements_per_candidate']} | "
              f"{t['mean_statement_ms']} |" for t in trips]
    lines += ["", "Simulated N workers on other machines: efficiency = eval / (eval + "
              "statements x RTT); the server's load in statements/s for N = "
              f"{', '.join(map(str, WORKERS))}:", "",
              "| strategy | RTT ms | efficiency | server statements/s |", "|---|---|---|---|"]
    lines += [f"| {s['strategy']} | {s['rtt_ms']} | {s['efficiency']} | "
              f"{' / '.join(map(str, s['server_statements_per_s'].values()))} |" for s in simulated]
    publish("workers", lines)


if __name__ == "__main__":
    main()
