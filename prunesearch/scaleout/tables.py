"""A run's candidates in an Optuna RDB study (PostgreSQL, or SQLite on one machine) that any
number of processes evaluate: the run itself (`prunesearch run --storage URL`, the driver) and
`prunesearch worker --storage URL --study NAME` on any machine.

The study is both the queue and the record. A trial's parameters are the arch's genes; once
evaluated, its user attribute "result" holds the whole Result (data only, written in one
commit), beside the attributes the dashboard shows. Two small tables next to optuna's own make
the work exactly-once:

- `prunesearch_claims` (study, arch key) -> trial id: the first trial to claim an arch evaluates
  it; a later trial with the same arch is answered with the owner's values (or failed, while the
  owner still runs) and never evaluates it again.
- `prunesearch_budget` (study) -> used, budget: a new claim takes one slot in the same
  transaction, so the workers together never evaluate more than the budget.

Kill safety is optuna's heartbeat: a worker records heartbeats while it holds a trial; any
process that looks for work first fails stale trials, and `_retry` enqueues each again. The
retry takes over the dead trial's claim (and its slot) unless that trial had already written its
result, in which case the result stands and the retry is a duplicate.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

from prunesearch.errors import UserError
from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis
from prunesearch.spaces import Arch
from prunesearch.strategies.trials import DIRECTIONS, name_metrics

HEARTBEAT_S = 2  # a holder's heartbeat period
GRACE_S = 10  # a trial whose heartbeat is older than this is taken for dead and retried
RUN_BEAT_S = 5  # the run's own heartbeat period while its search runs
RUN_BEAT = "run_beat"  # the attribute it counts up
RESULT = "result"  # the user attribute that holds a candidate's Result
ATTR = "prunesearch."  # prefix of the study attributes the run writes for its workers
MODES = ("sample", "queue")  # workers ask the sampler themselves, or take enqueued trials only
PUBLISHED = ("config", "weights", "order", "mode")  # the attributes a worker waits for

_tables = sa.MetaData()
CLAIMS = sa.Table("prunesearch_claims", _tables,
                  sa.Column("study", sa.String(512), primary_key=True),
                  sa.Column("arch", sa.String(64), primary_key=True),
                  sa.Column("trial_id", sa.Integer, nullable=False))
BUDGET = sa.Table("prunesearch_budget", _tables,
                  sa.Column("study", sa.String(512), primary_key=True),
                  sa.Column("used", sa.Integer, nullable=False),
                  sa.Column("budget", sa.Integer, nullable=False))


def arch_key(arch: Arch) -> str:
    return hashlib.sha256(arch.to_json().encode()).hexdigest()


def result_to_attr(result: Result) -> dict[str, Any]:
    data = asdict(result)
    data["arch"] = result.arch.to_json()
    return data


def result_from_attr(data: Any, where: str) -> Result:
    """The Result a trial holds; a UserError when the storage holds something else."""
    try:
        fields = dict(data)
        fields["arch"] = Arch.from_json(fields["arch"])
        result = Result(**fields)
        if not isinstance(result.macs, int) or result.status not in ("ok", "failed"):
            raise ValueError("wrong types")
        return result
    except Exception as err:
        raise UserError(f"The shared study's {where} does not hold a candidate's result "
                        f"({type(err).__name__}: {err}); the storage was edited or written by "
                        f"another program. Start the run under a new name.") from None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    kind: str  # "new": evaluate it; "held": `owner` holds it; "spent": no budget left
    owner: int | None = None


class StudyMissing(UserError):
    """No such study (or SQLite file) yet: a worker started before its run waits for it."""


class _BudgetSpent(Exception):
    pass


class SharedStudy:
    """One run's study in an RDB storage, its claims and budget, and the attributes the run
    leaves for its workers (config, weights, mode, done)."""

    def __init__(self, url: str, name: str, *, create: bool = True) -> None:
        """`create`: a missing SQLite file is made (the run); otherwise it is an error (a
        worker started before its run, or given a wrong path)."""
        self.url, self.name = url, name
        try:
            parsed = sa.engine.make_url(url)
        except Exception:  # the message would quote the URL, password included
            raise UserError(f"Storage URL '{_redacted(url)}' cannot be parsed; give a "
                            f"SQLAlchemy URL such as postgresql://user@host:5432/db or "
                            f"sqlite:///path/to/file.db.") from None
        dialect = parsed.get_backend_name()
        if dialect not in ("postgresql", "sqlite"):
            raise UserError(f"Storage '{_redacted(url)}' is {dialect}; prunesearch's shared "
                            f"studies run on PostgreSQL (many machines) or SQLite (one "
                            f"machine): give a postgresql:// or sqlite:/// URL.")
        if dialect == "sqlite" and not create and not Path(parsed.database or "").is_file():
            raise StudyMissing(f"The SQLite storage '{parsed.database}' does not exist; start "
                               f"the run first (`prunesearch run CONFIG --storage {url}`), or "
                               f"check the path (sqlite:////abs/path has four slashes).")
        try:
            self.engine = sa.create_engine(url)
        except ModuleNotFoundError as err:
            raise UserError(f"Storage '{_redacted(url)}' needs the Python driver '{err.name}'; "
                            f"install it (PostgreSQL: pip install 'prunesearch[postgres]', "
                            f"which brings psycopg).") from None
        except Exception as err:
            raise UserError(f"Storage URL '{_redacted(url)}' cannot be used "
                            f"({type(err).__name__}); give a SQLAlchemy URL such as "
                            f"postgresql://user@host:5432/db or sqlite:///path/to/file.db."
                            ) from None
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        try:
            # only the run creates tables and stamps their version (alembic_version, made
            # last): two processes doing either at once collide
            if not create and not sa.inspect(self.engine).has_table("alembic_version"):
                raise StudyMissing(f"The storage '{_redacted(url)}' holds no optuna study yet; "
                                   f"start the run first (`prunesearch run CONFIG --storage "
                                   f"URL`), or check the URL.")
            with warnings.catch_warnings():  # heartbeats are experimental: we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.storage = RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=_retry, skip_table_creation=not create)
        except StudyMissing:
            self.engine.dispose()  # a waiting worker asks again: leave no connection open
            raise
        except Exception as err:
            self.engine.dispose()
            raise UserError(f"Cannot open the storage '{_redacted(url)}' "
                            f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); check "
                            f"that the database server runs, the URL's host, port, user and "
                            f"database, and that the user may create tables.") from None

    @property
    def display_url(self) -> str:
        return _redacted(self.url)

    # --- the study -------------------------------------------------------------------------
    def create(self, *, resume: bool, config_toml: str, weights: dict[str, str],
               order: dict[str, list[int]], mode: str, budget: int, axis: CostAxis) -> None:
        """Create the run's study (or, resuming, open it) and publish what workers need: the
        budget first, the attributes a worker waits for (PUBLISHED) last."""
        published = {"config": config_toml, "weights": weights, "order": order, "mode": mode}
        assert tuple(published) == PUBLISHED
        exists = self.name in {s.study_name for s in
                               optuna.get_all_study_summaries(self.storage)}
        if exists and not resume:
            raise UserError(f"The storage already holds a study named '{self.name}' (an earlier "
                            f"run of this name); resume it with --resume, or give the run "
                            f"another name (--set name=...).")
        study = optuna.create_study(study_name=self.name, storage=self.storage,
                                    directions=DIRECTIONS, load_if_exists=True)
        name_metrics(study, axis)
        _tables.create_all(self.engine)
        with self.engine.begin() as conn:
            row = {"study": self.name, "used": 0, "budget": budget}
            conn.execute(self._insert(BUDGET).values(**row).on_conflict_do_nothing())
            conn.execute(sa.update(BUDGET).where(BUDGET.c.study == self.name)
                         .values(budget=budget))
        for key, value in (("done", False), *published.items()):
            study.set_user_attr(ATTR + key, value)

    @functools.cached_property
    def _study_id(self) -> int:
        """Looked up once (a missing study raises, and is looked up again next time)."""
        try:
            return self.storage.get_study_id_from_name(self.name)
        except KeyError:
            raise StudyMissing(f"The storage has no study named '{self.name}'; start the run "
                               f"with `prunesearch run CONFIG --storage URL` first (the study "
                               f"is named after the run's name), or check --study.") from None

    def load(self, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        self._study_id  # noqa: B018 - a missing study is a StudyMissing, not a KeyError
        return optuna.load_study(study_name=self.name, storage=self.storage, sampler=sampler)

    def attr(self, key: str) -> Any:
        """A published attribute: one query."""
        return self.attrs().get(key)

    def attrs(self) -> dict[str, Any]:
        """Every attribute the run published, by key: one query (the workers read `done` and
        the run's heartbeat between candidates)."""
        return {k.removeprefix(ATTR): v for k, v in
                self.storage.get_study_user_attrs(self._study_id).items() if k.startswith(ATTR)}

    def set_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self._study_id, ATTR + key, value)

    # --- budget and claims -----------------------------------------------------------------
    def slots(self) -> tuple[int, int]:
        """(used, budget)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(BUDGET.c.used, BUDGET.c.budget)
                               .where(BUDGET.c.study == self.name)).one()
        return int(row.used), int(row.budget)

    def close_budget(self) -> None:
        """No new claims from now on (the run's time is up)."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(BUDGET).where(BUDGET.c.study == self.name)
                         .values(budget=BUDGET.c.used))

    def claim(self, key: str, trial_id: int) -> Claim:
        try:
            with self.engine.begin() as conn:
                inserted = conn.execute(self._insert(CLAIMS).values(
                    study=self.name, arch=key, trial_id=trial_id).on_conflict_do_nothing()
                    .returning(CLAIMS.c.trial_id)).first()
                if inserted is not None:  # (psycopg's rowcount is no guide after ON CONFLICT)
                    took = conn.execute(sa.update(BUDGET).where(
                        BUDGET.c.study == self.name, BUDGET.c.used < BUDGET.c.budget)
                        .values(used=BUDGET.c.used + 1))
                    if took.rowcount != 1:
                        raise _BudgetSpent  # rolls the claim back
                    return Claim("new")
                owner = conn.execute(sa.select(CLAIMS.c.trial_id).where(
                    CLAIMS.c.study == self.name, CLAIMS.c.arch == key)).scalar_one()
                return Claim("held", int(owner))
        except _BudgetSpent:
            return Claim("spent")

    def take_over(self, key: str, dead: int, trial_id: int) -> bool:
        with self.engine.begin() as conn:
            moved = conn.execute(sa.update(CLAIMS).where(
                CLAIMS.c.study == self.name, CLAIMS.c.arch == key, CLAIMS.c.trial_id == dead)
                .values(trial_id=trial_id))
        return moved.rowcount == 1

    def claimed(self) -> dict[str, int]:
        """Every claimed arch key and the trial that holds it."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(CLAIMS.c.arch, CLAIMS.c.trial_id)
                                .where(CLAIMS.c.study == self.name))
            return {r.arch: int(r.trial_id) for r in rows}

    def results(self, skip: set[str]) -> list[Result]:
        """The results of the claimed archs not in `skip`, in claim-holder order; an arch whose
        holder has not written its result yet is left out."""
        out = []
        for key, trial_id in sorted(self.claimed().items(), key=lambda kv: kv[1]):
            if key in skip:
                continue
            data = self.storage.get_trial(trial_id).user_attrs.get(RESULT)
            if data is not None:
                out.append(result_from_attr(data, f"trial {trial_id}"))
        return out

    # --- taking work -----------------------------------------------------------------------
    def pop_waiting(self, study: optuna.Study) -> int | None:
        """Take an enqueued trial (RUNNING from now on), its heartbeat recorded first so a kill
        at any moment after the pop leaves a trial that goes stale and is retried."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.storage.record_heartbeat(trial._trial_id)
            with suppress(UpdateFinishedTrialError):  # another process finished it meanwhile
                if self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    return trial._trial_id
        return None

    def beating(self, trial_id: int) -> contextlib.AbstractContextManager[None]:
        """Heartbeats for `trial_id` while the block runs."""
        return _periodically(HEARTBEAT_S, lambda: self.storage.record_heartbeat(trial_id))

    def run_beating(self) -> contextlib.AbstractContextManager[None]:
        """The run's heartbeat while its search runs: the RUN_BEAT attribute counts up every
        RUN_BEAT_S, so a worker tells a run that is gone by a count that stops changing (no
        clocks of two machines compared)."""
        count = iter(range(1, 2**62))
        return _periodically(RUN_BEAT_S, lambda: self.set_attr(RUN_BEAT, next(count)))


@contextmanager
def _periodically(period: float, action: Callable[[], None]) -> Iterator[None]:
    """`action` now and every `period` seconds, on a daemon thread, while the block runs."""
    stop = threading.Event()

    def repeat() -> None:
        while not stop.wait(period):
            action()

    action()
    thread = threading.Thread(target=repeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _retry(study: optuna.Study, dead: FrozenTrial) -> None:
    """Enqueue a stale trial again: optuna's RetryHeartbeatStaleTrialCallback without carrying
    the dead trial's user attributes (its worker, or a result it wrote just before dying,
    which stays the arch's answer through the claim)."""
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=dead.params, distributions=dead.distributions,
        system_attrs={**dead.system_attrs, "failed_trial": dead.number}))


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
