"""What a shared study costs in storage, MEASURED through a real network delay, and how many
candidates a second one PostgreSQL server sustains.

On a throwaway PostgreSQL server (tests/pg_cluster.py) unless --storage names one:

- statements_per_candidate: SQL statements per candidate of `prunesearch run --storage URL`
  over the default job's space (resnet20 on Fashion-MNIST, dense weights of a quick model: 1
  epoch on 5000 images), counted in the run's process (it evaluates every candidate itself),
  the difference of two budgets (8, 24) so set-up is not counted; for random, tpe and emo.
- delay_rows: workers reach the server through a TCP proxy (benchmarks/_delay_proxy.py) that
  delays every byte by RTT / 2 each way, RTT = 0 (no proxy), 1, 5, 20 ms.
  - the CPU candidate: a real `prunesearch run --storage` with one `prunesearch worker` beside
    it (one torch thread each, a random search of --budget candidates), both through the
    proxy; efficiency = candidates/s over candidates/s at RTT 0.
  - the stand-in candidate: `--workers` processes in sample mode (random sampler) over the
    same space whose evaluator is a timed sleep of 0.05 s and a fixed score (what is measured
    is the storage path), with `--batch` 1 and 32; efficiency = candidates/s over the ideal
    workers / 0.05 s.
- ceiling_rows: 16, 32 and 64 stand-in workers on the local server, no delay, batch 1 and 8.

Candidates/s run from the first process's start of work to the last one's end.

    python benchmarks/workers.py [--budget 24] [--workers 4] [--storage URL]

Writes benchmarks/results/workers.json and the README section.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _delay_proxy import DelayProxy  # noqa: E402
from _machine import command_line, machine, publish, save_results  # noqa: E402
from pg_cluster import throwaway_postgres  # noqa: E402
from storage_counts import statements_per_candidate  # noqa: E402

from prunesearch.evaluators import Evaluator  # noqa: E402
from prunesearch.models import build_model  # noqa: E402
from prunesearch.objective import CostAxis  # noqa: E402
from prunesearch.scaleout.tables import SharedStudy  # noqa: E402
from prunesearch.scaleout.worker import CandidateWorker  # noqa: E402
from prunesearch.spaces import Arch, Space  # noqa: E402

QUICK = ["model.train.epochs=1", "model.train.max_train_images=5000", "supernet.epochs=0",
         "finetune.enabled=false", "search.strategy=random"]
RTTS_MS = (0.0, 1.0, 5.0, 20.0)
STAND_IN_S = 0.05
CEILING_WORKERS = (16, 32, 64)


class StandIn(Evaluator):
    """A candidate that takes `seconds` and scores 0.5: the storage path alone is measured."""

    def __init__(self, space: Space, seconds: float) -> None:
        super().__init__(space)
        self.seconds = seconds

    def _score(self, arch: Arch) -> float:
        time.sleep(self.seconds)
        return 0.5


def _cli(threads: int | None, *args: str) -> list[str]:
    return [sys.executable, "-m", "prunesearch",
            *(["--threads", str(threads)] if threads else []), *args]


def _sets(pairs: list[str]) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def _through(url: str, proxy: DelayProxy | None) -> str:
    if proxy is None:
        return url
    return sa.engine.make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


def _proxy(url: str, rtt_ms: float) -> DelayProxy | nullcontext[None]:
    if rtt_ms == 0:
        return nullcontext()
    parsed = sa.engine.make_url(url)
    return DelayProxy((parsed.host or "127.0.0.1", parsed.port or 5432), rtt_ms)


def _cpu_row(out: Path, storage: str, budget: int, rtt_ms: float) -> dict[str, Any]:
    """A real run and one real worker, both through the delay: candidates/s of the search."""
    name = f"cpu-{int(rtt_ms)}-{time.time_ns()}"
    with _proxy(storage, rtt_ms) as proxy:
        url = _through(storage, proxy)
        worker = subprocess.Popen(_cli(1, "worker", "--storage", url, "--study", name,
                                       "--quiet"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        run = subprocess.run(_cli(1, "run", "--out", str(out), "--quiet", "--storage", url,
                                  *_sets([*QUICK, f"name={name}", f"search.budget={budget}"])),
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"run {name} failed:\n{run.stderr[-3000:]}")
        if worker.wait(timeout=300) != 0:
            raise SystemExit(f"the worker of {name} failed:\n{worker.stderr.read()[-3000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    per_s = summary["n_evals"] / summary["timings"]["search_s"]
    return {"rtt_ms": rtt_ms, "candidate": "cpu", "candidate_s": None, "workers": 2,
            "batch": 1, "candidates": summary["n_evals"],
            "candidates_per_s": round(per_s, 3)}


def _stand_in(url: str, name: str, space: Space, seconds: float, batch: int, seed: int,
              results: Any) -> None:
    """One stand-in worker process: sample, claim, sleep, record until the budget is spent."""
    torch.set_num_threads(1)
    shared = SharedStudy(url, name, create=False)
    worker = CandidateWorker(shared, space, StandIn(space, seconds),
                             CostAxis.counted("macs", space), "sample",
                             optuna.samplers.RandomSampler(seed=seed), batch=batch)
    start = time.monotonic()
    while worker.step():
        worker.landed.clear()
    results.put((start, time.monotonic(), worker.evaluated))
    shared.close()


def _stand_in_row(storage: str, space: Space, rtt_ms: float, workers: int, batch: int,
                  candidates: int) -> dict[str, Any]:
    name = f"stand-in-{int(rtt_ms)}-{workers}-{batch}-{time.time_ns()}"
    shared = SharedStudy(storage, name)
    shared.create(resume=False, config_toml="", weights={}, order={}, mode="sample",
                  budget=candidates, axis=CostAxis.counted("macs", space))
    shared.close()  # no connection of this process lives on in its forked workers
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    with _proxy(storage, rtt_ms) as proxy:
        url = _through(storage, proxy)
        procs = [fork.Process(target=_stand_in, args=(url, name, space, STAND_IN_S, batch,
                                                      seed, results))
                 for seed in range(workers)]
        for p in procs:
            p.start()
        ends = [results.get(timeout=900) for _ in procs]
        for p in procs:
            p.join()
    done = sum(e for _, _, e in ends)
    assert done == candidates, (done, candidates)
    shared = SharedStudy(storage, name)
    assert len(shared.load().get_trials(deepcopy=False)) == candidates  # one trial each
    shared.close()
    per_s = done / (max(e for _, e, _ in ends) - min(s for s, _, _ in ends))
    return {"rtt_ms": rtt_ms, "candidate": "stand-in", "candidate_s": STAND_IN_S,
            "workers": workers, "batch": batch, "candidates": done,
            "candidates_per_s": round(per_s, 2),
            "efficiency": round(per_s / (workers / STAND_IN_S), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/workers.py")
    parser.add_argument("--budget", type=int, default=24, help="candidates per CPU row")
    parser.add_argument("--workers", type=int, default=2,
                        help="stand-in workers per delay row (one per core here)")
    parser.add_argument("--storage", help="an existing PostgreSQL URL (default: a throwaway "
                                          "server)")
    args = parser.parse_args()
    space = Space.from_model(build_model("resnet20", (1, 28, 28), 10, 1.0),
                             torch.zeros(1, 1, 28, 28))
    with ExitStack() as stack:
        storage = args.storage or stack.enter_context(throwaway_postgres())
        out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        os.environ.setdefault("PRUNESEARCH_CACHE", str(out / "cache"))
        # the dense checkpoint first, so no timed run trains it
        subprocess.run(_cli(None, "train", *_sets(QUICK)), check=True, capture_output=True)
        counts = {s: statements_per_candidate(None, [*QUICK, f"search.strategy={s}"],
                                              storage, out)
                  for s in ("random", "tpe", "emo")}
        print("statements per candidate", counts, flush=True)
        delay_rows = []
        for rtt in RTTS_MS:
            delay_rows.append(_cpu_row(out, storage, args.budget, rtt))
            for batch in (1, 32):
                per_worker = max(4 * batch, 16)
                delay_rows.append(_stand_in_row(storage, space, rtt, args.workers, batch,
                                                args.workers * per_worker))
            print(delay_rows[-3:], flush=True)
        base = delay_rows[0]["candidates_per_s"]
        for row in delay_rows:
            if row["candidate"] == "cpu":
                row["efficiency"] = round(row["candidates_per_s"] / base, 3)
        ceiling_rows = []
        for workers in CEILING_WORKERS:
            for batch in (1, 8):
                row = _stand_in_row(storage, space, 0.0, workers, batch, workers * 8 * batch)
                ceiling_rows.append({k: row[k] for k in ("workers", "batch", "candidates",
                                                         "candidates_per_s", "efficiency")})
                print(ceiling_rows[-1], flush=True)
    payload = {"command": command_line(), "machine": machine(),
               "statements_per_candidate": {s: c["statements_per_candidate"]
                                            for s, c in counts.items()},
               "mean_statement_ms": {s: c["mean_statement_ms"] for s, c in counts.items()},
               "delay_rows": delay_rows, "ceiling_rows": ceiling_rows}
    save_results("workers", payload)
    m = payload["machine"]
    lines = [f"`{payload['command']}` on {m['cpu']}, {m['cores']} cores, {m['date']}; a local "
             f"PostgreSQL server, the delay added by a TCP proxy each way.", "",
             "Statements per candidate (the run's process, set-up excluded): " + ", ".join(
                 f"{s} {v}" for s, v in payload["statements_per_candidate"].items()) + ".", "",
             "| RTT ms | candidate | workers | batch | candidates/s | efficiency |",
             "|---|---|---|---|---|---|"]
    kinds = {"cpu": "CPU (real)", "stand-in": "0.05 s stand-in"}
    lines += [f"| {r['rtt_ms']:g} | {kinds[r['candidate']]} | {r['workers']} | {r['batch']} | "
              f"{r['candidates_per_s']} | {r['efficiency']} |"
              for r in delay_rows]
    lines += ["", "Efficiency: the CPU rows against the CPU row at RTT 0 (a run and one worker, "
              "one thread each); the stand-in rows against workers / 0.05 s.", "",
              "Server ceiling (0.05 s stand-in workers, no delay):", "",
              "| workers | batch | candidates/s | efficiency |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['batch']} | {r['candidates_per_s']} | {r['efficiency']} |"
              for r in ceiling_rows]
    publish("workers", lines)


if __name__ == "__main__":
    main()
