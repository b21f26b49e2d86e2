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
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
import torch
from pg_cluster import throwaway_postgres

from prunesearch.scaleout.tables import SharedStudy, StudyMissing

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


def _workers(url: str, study: str, n: int, env: dict[str, str]) -> list[subprocess.Popen]:
    return [subprocess.Popen(_cli("worker", "--storage", url, "--study", study, "--wait", "120"),
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
    ranked on the dense weights (their own ranking of the trained-on weights would differ)."""
    workers = _workers(postgres, "shared-tpe", 1, cli_env)
    run = subprocess.run(_cli("run", str(TINY), "--out", str(tmp_path), "--quiet", "--storage",
                              postgres, "--set", "name=shared-tpe", "--set",
                              "search.strategy=tpe", "--set", "search.budget=24", "--set",
                              "finetune.enabled=false", "--set", "supernet.epochs=1"),
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out, err = workers[0].communicate(timeout=60)
    assert workers[0].returncode == 0, err
    rows = _rows(tmp_path / "shared-tpe")
    assert len(rows) == 24 and len({r["arch"] for r in rows}) == 24

    study = _study(postgres, "shared-tpe")
    results = [t for t in study.trials if "result" in t.user_attrs]
    assert len(results) == 24  # one trial holds each arch's result; any other is a duplicate
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
                                 deadline_s: float = 240) -> int:
    """SIGKILL `victim` while it holds a trial; that trial's number."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            running = _study(url, study).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        except StudyMissing:  # the run has not made it yet
            running = []
        held = [t for t in running if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        if held:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return held[0].number
        time.sleep(0.05)
    raise AssertionError("the worker never held a trial")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "emo"])
def test_a_killed_workers_candidate_is_retried_and_no_arch_runs_twice(
        strategy, postgres, tmp_path, cli_env):
    """Fashion-MNIST and a bigger validation set make each candidate take long enough that
    the kill lands while the worker holds one."""
    name = f"killed-{strategy}"
    workers = _workers(postgres, name, 2, cli_env)
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
    dead = trials[killed]
    assert dead.state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].params == dead.params
    held = {r["arch"] for r in rows}
    assert sum(t.user_attrs["result"]["arch"] in held for t in trials
               if "result" in t.user_attrs) == 60  # exactly one result per arch


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


def test_a_retry_of_a_trial_killed_after_its_result_landed_completes_with_it(postgres):
    """The moment between a worker writing its result and telling its trial: killed there,
    the trial fails stale and its retry must not evaluate again, yet the study must hold one
    COMPLETE trial for the candidate the run records (it held none: 59 trials for 60)."""
    from test_search import MODEL, CostProxyEvaluator

    from prunesearch.objective import CostAxis
    from prunesearch.scaleout.tables import RESULT, _retry
    from prunesearch.scaleout.worker import CandidateWorker
    from prunesearch.spaces import Space

    space = Space.from_model(MODEL, torch.zeros(1, 1, 8, 8))
    axis = CostAxis.counted("macs", space)
    shared = SharedStudy(postgres, "landed-then-killed")
    shared.create(resume=False, config_toml="", weights={}, order={}, mode="queue", budget=4,
                  axis=axis)
    study = shared.load()
    arch = space.sample(np.random.default_rng(0))
    study.enqueue_trial({d.name: int(g) for d, g in zip(space.dims, space.encode(arch),
                                                          strict=True)})

    class Killed(Exception):
        pass

    def killed(*_: object) -> None:
        raise Killed

    first = CandidateWorker(shared, study, space, CostProxyEvaluator(space), axis, "queue")
    first._tell = killed  # dies after its result landed, before its trial is told
    with pytest.raises(Killed):
        first.step()
    (dead,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert RESULT in dead.user_attrs
    shared.storage.set_trial_state_values(dead._trial_id, optuna.trial.TrialState.FAIL)
    _retry(study, study.get_trials()[dead.number])  # what the stale-trial callback does

    evaluator = CostProxyEvaluator(space)
    second = CandidateWorker(shared, shared.load(), space, evaluator, axis, "queue")
    assert second.step() and evaluator.calls == 0  # never evaluated twice
    (landed,) = shared.results(set())
    (complete,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete.user_attrs["duplicate_of"] == dead.number
    assert complete.values == pytest.approx([1 - landed.val_score, axis.ratio(landed)])
    assert complete.user_attrs["arch"] == arch.to_json()
