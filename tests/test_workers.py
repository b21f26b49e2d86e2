"""A run shared with `prunesearch worker` processes through a real PostgreSQL server (a
throwaway cluster started here): every arch evaluated exactly once, workers score on the run's
own weights, and a SIGKILLed worker's candidate is retried by another process."""

from __future__ import annotations

import csv
import functools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
import torch
from pg_cluster import throwaway_postgres

from prunesearch.scaleout.tables import (
    CANDIDATES,
    Finish,
    SharedStudy,
    StudyMissing,
    Work,
    arch_key,
)
from prunesearch.scaleout.trial_rows import FinishedTrial
from prunesearch.scaleout.worker import CandidateWorker
from prunesearch.spaces import Arch

TINY = Path(__file__).parent / "configs" / "tiny.toml"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunesearch", "--threads", "1", *args]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "candidates.csv").open() as f:
        return list(csv.DictReader(f))


def _workers(url: str, study: str, n: int, env: dict[str, str],
             batch: int = 1) -> list[subprocess.Popen]:
    return [subprocess.Popen(_cli("worker", "--storage", url, "--study", study, "--wait", "120",
                                  "--batch", str(batch)),
                             env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(n)]


@functools.cache
def _shared(url: str, name: str) -> SharedStudy:
    """One connection pool per study (polling with a new storage each time would open
    connections until the server refuses more), opened as a worker opens it: never creating
    tables beside the run. StudyMissing until the run has made them (not cached then)."""
    return SharedStudy(url, name, create=False)


def _study(url: str, name: str) -> optuna.Study:
    return _shared(url, name).load()


def test_workers_evaluate_each_arch_once_on_the_runs_own_weights(postgres, tmp_path, cli_env):
    """With a supernet stage: workers score on its weights, in the channel order the run
    ranked on the dense weights (their own ranking of the trained-on weights would differ).
    The budget keeps the run searching for some 20 s, so the worker, which prepares its
    evaluator only once the run has published, gets candidates too."""
    budget = 200
    workers = _workers(postgres, "shared-tpe", 1, cli_env)
    run = subprocess.run(_cli("run", str(TINY), "--out", str(tmp_path), "--quiet", "--storage",
                              postgres, "--set", "name=shared-tpe", "--set",
                              "search.strategy=tpe", "--set", f"search.budget={budget}", "--set",
                              "evaluator.calib_batches=16", "--set", "finetune.enabled=false",
                              "--set", "supernet.epochs=1"),
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out, err = workers[0].communicate(timeout=60)
    assert workers[0].returncode == 0, err
    rows = _rows(tmp_path / "shared-tpe")
    assert len(rows) == budget and len({r["arch"] for r in rows}) == budget

    study = _study(postgres, "shared-tpe")
    results = study.trials
    assert len(results) == budget  # one trial for each candidate, and nothing else
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in results)
    assert sorted(t.number for t in results) == list(range(budget))
    by_worker: dict[str, int] = {}
    for t in results:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
    worker_id = next(w for w in by_worker if w.endswith(f":{workers[0].pid}"))
    assert len(by_worker) == 2  # the run evaluated too
    assert f"this worker evaluated {by_worker[worker_id]} candidates" in out

    # what the worker scored equals what the run's own evaluator gives for that arch
    from prunesearch.app.config import load_config
    from prunesearch.app.prepare import prepare, resolve_device
    from prunesearch.spaces import Arch

    theirs = [t.user_attrs["result"] for t in results if t.user_attrs["worker"] == worker_id]
    prep = prepare(load_config(tmp_path / "shared-tpe" / "config.toml"), resolve_device("cpu"),
                   progress=False)
    assert prep.supernet_meta is not None
    for result in theirs[:3]:
        mine = prep.evaluator.evaluate([Arch.from_json(result["arch"])])[0]
        assert mine.val_score == pytest.approx(result["val_score"], abs=1e-9)


def _kill_a_worker_mid_candidate(url: str, study: str, victim: subprocess.Popen,
                                 deadline_s: float = 240) -> list[str]:
    """SIGKILL `victim` while it holds candidates; their archs."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            held = _shared(url, study).held()
        except (StudyMissing, sa.exc.ProgrammingError):  # the run has not made it yet
            held = {}
        mine = [key for key, owner in held.items() if f":{victim.pid}:" in (owner or "")]
        if mine:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return mine
        time.sleep(0.05)
    raise AssertionError("the worker never held a candidate")


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "batch"), [("random", 1), ("emo", 1), ("random", 4)])
def test_a_killed_workers_candidate_is_retried_and_no_arch_runs_twice(
        strategy, batch, postgres, tmp_path, cli_env):
    """Fashion-MNIST and a bigger validation set make each candidate take long enough that
    the kill lands while the worker holds one (or a batch of them)."""
    name = f"killed-{strategy}-{batch}"
    workers = _workers(postgres, name, 2, cli_env, batch)
    run = subprocess.Popen(_cli(
        "run", str(TINY), "--out", str(tmp_path), "--quiet", "--storage", postgres,
        "--set", f"name={name}", "--set", f"search.strategy={strategy}", "--set",
        "search.budget=60", "--set", "search.batch_size=8", "--set", "data.dataset=fashion-mnist",
        "--set", "model.train.epochs=1", "--set", "model.train.max_train_images=2000",
        "--set", "evaluator.val_images=1500", "--set", "evaluator.calib_batches=8",
        "--set", "finetune.enabled=false"),
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_a_worker_mid_candidate(postgres, name, workers[0])
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    _, worker_err = workers[1].communicate(timeout=60)
    assert workers[1].returncode == 0, worker_err

    rows = _rows(tmp_path / name)
    assert len(rows) == 60 and len({r["arch"] for r in rows}) == 60
    trials = _study(postgres, name).trials
    assert len(trials) == 60 and all(t.state == optuna.trial.TrialState.COMPLETE
                                     for t in trials)  # the study is the run, after a kill
    assert {t.user_attrs["arch"] for t in trials} == {r["arch"] for r in rows}
    for key in killed:
        (retried,) = [t for t in trials if arch_key(Arch.from_json(t.user_attrs["arch"])) == key]
        assert not retried.user_attrs["worker"].endswith(f":{workers[0].pid}")


@pytest.mark.parametrize("strategy", ["emo", "dp"])
def test_a_shared_run_alone_evaluates_exactly_its_budget(strategy, tmp_path):
    """Queued strategies: the run's own last candidate of a round is in its evaluator's cache
    while still being recorded; counting it as in the run let the next round queue one
    candidate past the budget (15 trials for a budget of 14)."""
    from prunesearch.app.config import load_config
    from prunesearch.app.run import run_job

    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(TINY, [f"search.strategy={strategy}", "search.budget=14",
                             f"search.storage={url}", "finetune.enabled=false"])
    run = run_job(cfg, tmp_path / "runs", progress=False).run_dir
    trials = SharedStudy(url, "tiny", create=False).load().trials
    assert len(trials) == 14 == len(_rows(run))
    assert {t.user_attrs["arch"] for t in trials} == {r["arch"] for r in _rows(run)}


def _client_connections(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            ).scalar_one())
    finally:
        engine.dispose()


def test_a_waiting_worker_holds_a_bounded_number_of_connections(postgres, cli_env):
    """A worker polls once a second for its run's study; polling must not open connections
    until the server refuses clients (max_connections: 100), which once failed a worker whose
    run spent a minute training its dense model."""
    SharedStudy(postgres, "someone-else").engine.dispose()  # optuna's tables exist, no study
    before = _client_connections(postgres)
    worker = subprocess.Popen(_cli("worker", "--storage", postgres, "--study", "not-yet",
                                   "--wait", "12", "--quiet"),
                              env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    peak = before
    while worker.poll() is None:
        peak = max(peak, _client_connections(postgres))
        time.sleep(0.5)
    _, err = worker.communicate()
    assert worker.returncode == 2 and "no study named 'not-yet'" in " ".join(err.split())
    assert peak - before <= 8, f"{peak - before} connections held while waiting"  # leaking: ~36


@pytest.mark.parametrize("config", ['[model]\nname = "mypkg.nets:build"\n',
                                    'plugins = ["mypkg.strategies"]\n'])
def test_a_worker_imports_code_a_stored_config_names_only_with_trust_code(config):
    from prunesearch.app.worker import _config
    from prunesearch.errors import UserError

    shared = SimpleNamespace(name="s")
    with pytest.raises(UserError, match="--trust-code"):
        _config(shared, config, trust_code=False)  # type: ignore[arg-type]
    try:  # trusted: read on (a plugin is then imported, and here not found)
        _config(shared, config, trust_code=True)  # type: ignore[arg-type]
    except UserError as err:
        assert "--trust-code" not in str(err) and "mypkg" in str(err)


@pytest.mark.slow
def test_a_killed_run_resumes_its_shared_study_without_losing_or_repeating_a_candidate(
        postgres, tmp_path, cli_env):
    """emo's queue: the run (its driver) is SIGKILLed mid-search while a worker goes on; the
    resumed run finishes the budget with every arch once."""
    name = "killed-driver"
    args = ["run", str(TINY), "--out", str(tmp_path), "--quiet", "--storage", postgres,
            "--set", f"name={name}", "--set", "search.strategy=emo", "--set",
            "search.budget=120", "--set", "finetune.enabled=false"]
    (worker,) = _workers(postgres, name, 1, cli_env)
    run = subprocess.Popen(_cli(*args), env=cli_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    journal = tmp_path / name / "candidates.csv"
    deadline = time.monotonic() + 240
    while not (journal.exists() and len(_rows(journal.parent)) >= 20):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    resumed = subprocess.run(_cli(*args, "--resume"), env=cli_env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    _, worker_err = worker.communicate(timeout=60)
    assert worker.returncode == 0, worker_err
    rows = _rows(tmp_path / name)
    assert len(rows) == 120 and len({r["arch"] for r in rows}) == 120


@pytest.mark.slow
def test_a_worker_whose_run_is_gone_stops_with_exit_2(postgres, tmp_path, cli_env):
    """The run is SIGKILLed mid-search and never marks its study done: the worker, which
    goes on evaluating meanwhile, stops once the run's heartbeat has not moved for --wait
    seconds, with a message that says so."""
    name = "orphaned-worker"
    worker = subprocess.Popen(_cli("worker", "--storage", postgres, "--study", name, "--wait",
                                   "15", "--quiet"), env=cli_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    run = subprocess.Popen(_cli("run", str(TINY), "--out", str(tmp_path), "--quiet",
                                "--storage", postgres, "--set", f"name={name}", "--set",
                                "search.strategy=random", "--set", "search.budget=2000",
                                "--set", "finetune.enabled=false"),
                           env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = tmp_path / name / "candidates.csv"
    deadline = time.monotonic() + 240
    while not (journal.exists() and len(_rows(journal.parent)) >= 10):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.05)
    assert worker.poll() is None  # the live run's heartbeat keeps it working
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = time.monotonic()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 2 and "Traceback" not in err
    assert "has given no sign of life for 15 s" in " ".join(err.split())
    assert time.monotonic() - killed_at >= 10  # not before the heartbeat went stale


class Killed(Exception):
    """Stands for a process killed there: its open transaction never commits."""


@functools.cache
def _space():  # type: ignore[no-untyped-def]
    from test_search import MODEL

    from prunesearch.objective import CostAxis
    from prunesearch.spaces import Space

    space = Space.from_model(MODEL, torch.zeros(1, 1, 8, 8))
    return space, CostAxis.counted("macs", space)


def _queued_study(url: str, name: str, n: int):  # type: ignore[no-untyped-def]
    space, axis = _space()
    shared = SharedStudy(url, name)
    shared.create(resume=False, config_toml="", weights={}, order={}, mode="queue", budget=n,
                  axis=axis)
    rng = np.random.default_rng(0)
    archs = list({space.sample(rng): None for _ in range(4 * n)})[:n]
    shared.enqueue([Work(arch_key(a), [int(g) for g in space.encode(a)]) for a in archs])
    return space, axis, archs


def _killed_at(shared: SharedStudy, statement: int) -> None:
    """From now on, `shared`'s process dies at its `statement`-th statement of a finish (the
    count of statements: after its commit)."""
    finish, seen = shared.finish, [0]

    def count(*_: object) -> None:
        seen[0] += 1
        if seen[0] > statement:
            raise Killed

    def dying(done):  # type: ignore[no-untyped-def]
        sa.event.listen(shared.engine, "before_cursor_execute", count)
        try:
            finish(done)
        finally:
            sa.event.remove(shared.engine, "before_cursor_execute", count)
        raise Killed  # after the commit

    shared.finish = dying  # type: ignore[method-assign]


@pytest.mark.parametrize("batch", [1, 2])
def test_a_kill_at_any_moment_of_a_finish_leaves_one_complete_trial_per_candidate(
        postgres, batch):
    """A holder killed at each statement of recording its results, or right after: another
    process takes its candidates over (its heartbeat is stale) and the study ends with one
    COMPLETE trial per candidate, never two, never none; an arch is evaluated again only when
    the kill came before its result committed."""
    from test_search import CostProxyEvaluator


    statements = 6 + (batch > 1)  # what a finish costs (see SharedStudy._finish)
    for moment in range(statements + 1):
        name = f"kill-finish-{batch}-{moment}"
        space, axis, archs = _queued_study(postgres, name, 2 * batch)
        victim = SharedStudy(postgres, name)
        _killed_at(victim, moment)
        dying = CandidateWorker(victim, space, CostProxyEvaluator(space), axis, "queue",
                                batch=batch)
        with pytest.raises(Killed):
            dying.step()
            dying.flush()  # the recording runs beside the next batch: its end is here
        heir = SharedStudy(postgres, name)
        heir.grace_s = 0.0  # the victim's heartbeat is stale at once
        evaluator = CostProxyEvaluator(space)
        worker = CandidateWorker(heir, space, evaluator, axis, "queue", batch=batch)
        while worker.step():
            pass
        committed = moment == statements
        assert evaluator.calls == (batch if committed else 2 * batch)
        trials = heir.load().trials
        assert len(trials) == 2 * batch, moment
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert sorted(t.user_attrs["arch"] for t in trials) == sorted(a.to_json() for a in archs)
        assert sorted(t.number for t in trials) == list(range(2 * batch))
        assert [r.arch for _, r in heir.feed(0)] == [Arch.from_json(t.user_attrs["arch"])
                                                      for t in trials]
        assert heir.held() == {}
        for shared in (victim, heir):
            shared.close()


def test_a_holder_whose_candidate_was_taken_over_records_nothing(postgres):
    """A holder judged dead (its heartbeat late) comes back after another process finished
    its candidate: its own finish writes no second trial."""
    from test_search import CostProxyEvaluator

    space, axis, _ = _queued_study(postgres, "late-holder", 1)
    late, heir = SharedStudy(postgres, "late-holder"), SharedStudy(postgres, "late-holder")
    (work,) = late.take(1)
    heir.grace_s = 0.0
    heirs = CandidateWorker(heir, space, CostProxyEvaluator(space), axis, "queue")
    assert heirs.step() and heirs.flush()
    trial = FinishedTrial({}, [0.5, 0.5], {}, datetime.now())
    assert late.finish([Finish(work.key, trial)]) == []
    assert len(heir.load().trials) == 1 and heir.held() == {}
    late.close(), heir.close()


def test_a_sampling_worker_claims_its_next_batch_while_it_evaluates(postgres):
    """The storage's round trips of the next claim overlap the evaluation (a distant server
    costs no waiting): while a batch is scored, the batch after it is claimed already, never
    past the budget, and the study ends with one trial per candidate."""
    from test_search import CostProxyEvaluator

    space, axis = _space()
    shared = SharedStudy(postgres, "prefetch")
    shared.create(resume=False, config_toml="", weights={}, order={}, mode="sample", budget=9,
                  axis=axis)
    claimed: list[int] = []
    mine = (sa.select(sa.func.count()).select_from(CANDIDATES)
            .where(CANDIDATES.c.study == "prefetch", CANDIDATES.c.owner == shared.owner))

    class Watching(CostProxyEvaluator):
        def evaluate(self, archs):  # type: ignore[no-untyped-def]
            deadline, count = time.monotonic() + 10, 0
            while time.monotonic() < deadline:  # the claim runs on the background thread
                with shared.engine.connect() as conn:
                    count = conn.execute(mine).scalar_one()
                if count == min(len(claimed) * 3 + 6, 9):
                    break
                time.sleep(0.02)
            claimed.append(count)
            return super().evaluate(archs)

    worker = CandidateWorker(shared, space, Watching(space), axis, "sample",
                             optuna.samplers.RandomSampler(seed=0), batch=3)
    while worker.step():
        pass
    assert claimed == [6, 9, 9]  # one batch ahead (without: 3, 6, 9), none past the budget
    trials = shared.load().trials
    assert len(trials) == 9 == worker.evaluated and shared.held() == {}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    shared.close()


@pytest.mark.parametrize("strategy", ["random", "tpe", "emo"])
def test_a_candidate_costs_at_most_10_storage_statements(postgres, tmp_path, strategy):
    """Counted in the run's process (it evaluates every candidate itself here): claim,
    finish and the feed's read, not per-candidate polls, heartbeats or attribute writes."""
    from storage_counts import statements_per_candidate

    counted = statements_per_candidate(TINY, [f"search.strategy={strategy}",
                                              "finetune.enabled=false"], postgres, tmp_path)
    assert counted["statements_per_candidate"] <= 10, counted
