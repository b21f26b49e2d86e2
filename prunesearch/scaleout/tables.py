"""A run's candidates in a shared RDB storage (PostgreSQL, or SQLite on one machine) that any
number of processes evaluate: the run itself (`prunesearch run --storage URL`, the driver) and
`prunesearch worker --storage URL --study NAME` on any machine.

Two tables beside optuna's own hold the work, and optuna's study holds the record:

- `prunesearch_candidates` (study, arch key): the queue and the claims. A row is queued (no
  owner), held (an owner whose heartbeat, `beat` on the server's clock, is fresh), or finished
  (`seq`: its place in the order results landed, and its optuna trial). The first process to
  insert an arch's row evaluates it; nobody evaluates a finished arch again.
- `prunesearch_counts` (study): budget slots used (a queued or claimed arch takes one in the
  same transaction, so the processes together never evaluate more than the budget) and
  candidates finished (the sequence the results feed is read by: `seq > last`, one query that
  returns only what is new).

A candidate costs a few statements: its claim (insert, then the slot: one transaction), its
finish (the count, the optuna trial written whole by scaleout/trial_rows.py, the row's seq:
one transaction), and its share of one read of the feed. A holder's heartbeat refreshes all it
holds on its own interval; a row whose heartbeat is older than the grace period is taken over
by whichever process looks for work next, and the finish of a process that lost its row
writes nothing. The trial and the row's seq commit together, so every finished candidate is
exactly one trial of the study, COMPLETE when its evaluation succeeded, whatever moment a
process is killed. Idle processes wait on notifications (scaleout/waking.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage
from sqlalchemy.dialects import postgresql, sqlite

from prunesearch.errors import UserError
from prunesearch.evaluators import Result
from prunesearch.objective import CostAxis
from prunesearch.scaleout.trial_rows import USER_ATTRS, FinishedTrial, insert_trials
from prunesearch.scaleout.waking import Waker, channel_of, notify_clause
from prunesearch.spaces import Arch
from prunesearch.strategies.trials import DIRECTIONS, name_metrics

HEARTBEAT_S = 3.0  # a holder's heartbeat period
GRACE_S = 15.0  # a row whose heartbeat is older than this is taken for dead and taken over
RUN_BEAT_S = 5  # the run's own heartbeat period while its search runs
RUN_BEAT = "run_beat"  # the attribute it counts up
RESULT = "result"  # the trial's user attribute that holds a candidate's Result
ATTR = "prunesearch."  # prefix of the study attributes the run writes for its workers
MODES = ("sample", "queue")  # workers ask the sampler themselves, or take queued archs only
PUBLISHED = ("config", "weights", "order", "mode")  # the attributes a worker waits for

_tables = sa.MetaData()
CANDIDATES = sa.Table("prunesearch_candidates", _tables,
                      sa.Column("study", sa.String(512), primary_key=True),
                      sa.Column("arch", sa.String(64), primary_key=True),
                      sa.Column("genes", sa.Text, nullable=False),  # JSON list of ints
                      sa.Column("owner", sa.String(300)),  # None while queued
                      sa.Column("beat", sa.Float),  # the owner's last heartbeat, server clock
                      sa.Column("seq", sa.Integer),  # set when finished
                      sa.Column("trial_id", sa.Integer),
                      sa.Index("prunesearch_candidates_seq", "study", "seq"))
COUNTS = sa.Table("prunesearch_counts", _tables,
                  sa.Column("study", sa.String(512), primary_key=True),
                  sa.Column("used", sa.Integer, nullable=False),
                  sa.Column("budget", sa.Integer, nullable=False),
                  sa.Column("granted", sa.Integer, nullable=False),  # the last claim's slots
                  sa.Column("finished", sa.Integer, nullable=False))


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
class Work:
    """A candidate a process holds: its row's key and genes."""

    key: str
    genes: list[int]


@dataclass(frozen=True)
class Finish:
    """A held candidate's outcome: the trial that records it."""

    key: str
    trial: FinishedTrial

class StudyMissing(UserError):
    """No such study (or SQLite file) yet: a worker started before its run waits for it."""


class SharedStudy:
    """One run's study in an RDB storage, its candidates and counts, and the attributes the
    run leaves for its workers (config, weights, mode, done). `grace_s`: how stale a holder's
    heartbeat must be before its candidate is taken over."""

    grace_s = GRACE_S

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
        self.owner = f"{worker_id()}:{secrets.token_hex(4)}"  # unique per process and study
        self.waker = Waker(self.engine, channel_of(name), self.owner)
        # one statement needs no transaction: no BEGIN and COMMIT round trips around it
        self._single = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            # only the run creates tables and stamps their version (alembic_version, made
            # last): two processes doing either at once collide
            if not create and not sa.inspect(self.engine).has_table("alembic_version"):
                raise StudyMissing(f"The storage '{_redacted(url)}' holds no optuna study yet; "
                                   f"start the run first (`prunesearch run CONFIG --storage "
                                   f"URL`), or check the URL.")
            self.storage = RDBStorage(url, skip_table_creation=not create)
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
        try:
            self.storage.get_study_id_from_name(self.name)
            exists = True
        except KeyError:
            exists = False
        if exists and not resume:
            raise UserError(f"The storage already holds a study named '{self.name}' (an earlier "
                            f"run of this name); resume it with --resume, or give the run "
                            f"another name (--set name=...).")
        study = optuna.create_study(study_name=self.name, storage=self.storage,
                                    directions=DIRECTIONS, load_if_exists=True)
        name_metrics(study, axis)
        _tables.create_all(self.engine)
        with self.engine.begin() as conn:
            row = {"study": self.name, "used": 0, "budget": budget, "granted": 0, "finished": 0}
            conn.execute(self._insert(COUNTS).values(**row).on_conflict_do_nothing())
            conn.execute(self._counts().values(budget=budget))
        for key, value in (("done", False), *published.items()):
            study.set_user_attr(ATTR + key, value)

    def announce_done(self) -> None:
        """The run is over: workers stop (those waiting are woken)."""
        self.set_attr("done", True)
        if self.waker.postgres:
            with self.engine.begin() as conn:
                conn.execute(sa.select(notify_clause(self.waker.channel, "")))

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

    # --- counts, queue and claims ----------------------------------------------------------
    def _counts(self) -> sa.Update:
        return sa.update(COUNTS).where(COUNTS.c.study == self.name)

    def _now(self) -> sa.ColumnElement[Any]:
        """The server's clock in seconds: every process's heartbeat is judged on one clock."""
        if self.waker.postgres:
            return sa.func.extract("epoch", sa.func.clock_timestamp())
        return (sa.func.julianday("now") - 2440587.5) * 86400.0

    def _least(self, a: Any, b: Any) -> sa.ColumnElement[Any]:
        return (sa.func.least if self.waker.postgres else sa.func.min)(a, b)

    def _insert_new(self, conn: sa.Connection, work: Sequence[Work],
                    owner: str | None) -> list[str]:
        """Insert rows for `work` (queued, or held by `owner`); the keys no row had yet."""
        rows = [{"study": self.name, "arch": w.key, "genes": json.dumps(w.genes),
                 "owner": owner, "beat": None if owner is None else self._now()} for w in work]
        return list(conn.execute(self._insert(CANDIDATES).values(rows).on_conflict_do_nothing()
                                 .returning(CANDIDATES.c.arch)).scalars())

    def slots(self) -> tuple[int, int]:
        """(used, budget)."""
        with self._single.connect() as conn:
            row = conn.execute(sa.select(COUNTS.c.used, COUNTS.c.budget)
                               .where(COUNTS.c.study == self.name)).one()
        return int(row.used), int(row.budget)

    def close_budget(self) -> None:
        """No new claims from now on (the run's time is up)."""
        with self._single.connect() as conn:
            conn.execute(self._counts().values(budget=COUNTS.c.used))

    def enqueue(self, work: Sequence[Work]) -> list[str]:
        """Queue candidates for any process to take, each new one taking a budget slot (the
        caller keeps within the budget); the keys that were new."""
        if not work:
            return []
        with self.engine.begin() as conn:
            new = self._insert_new(conn, work, None)
            if new:
                count = self._counts().values(used=COUNTS.c.used + len(new))
                if self.waker.postgres:  # idle workers wake to take them
                    count = count.returning(notify_clause(self.waker.channel, ""))
                conn.execute(count)
        return new

    def claim(self, work: Sequence[Work]) -> tuple[list[str], tuple[int, int]]:
        """Hold new candidates for this process, each taking a budget slot: the keys it got
        (an arch that some process queued, holds or finished is left out, as is every one
        past the budget) and (used, budget) after."""
        with self.engine.begin() as conn:
            new = self._insert_new(conn, work, self.owner) if work else []
            # SET reads the row as it was: granted is what was left, at most what is asked
            granted, used, budget = conn.execute(self._counts().values(
                granted=self._least(len(new), COUNTS.c.budget - COUNTS.c.used),
                used=self._least(COUNTS.c.used + len(new), COUNTS.c.budget))
                .returning(COUNTS.c.granted, COUNTS.c.used, COUNTS.c.budget)).one()
            if granted < len(new):  # past the budget: those are not held after all
                conn.execute(sa.delete(CANDIDATES).where(CANDIDATES.c.study == self.name,
                                                         CANDIDATES.c.arch.in_(new[granted:])))
                new = new[:granted]
        return new, (int(used), int(budget))

    def take(self, k: int) -> list[Work]:
        """Up to `k` candidates for this process: queued ones, and ones whose holder's
        heartbeat is older than the grace period (it died: this process takes over)."""
        c = CANDIDATES.c
        free = sa.and_(c.study == self.name, c.seq.is_(None),
                       sa.or_(c.owner.is_(None), c.beat < self._now() - self.grace_s))
        pick = sa.select(c.arch).where(free).limit(k)
        if self.waker.postgres:  # processes taking at once take different rows
            pick = pick.with_for_update(skip_locked=True)
        # materialized: a subquery in the WHERE may run again and pick more than k rows
        picked = pick.cte("picked").prefix_with("MATERIALIZED")
        with self._single.connect() as conn:
            rows = conn.execute(sa.update(CANDIDATES)
                                .where(c.study == self.name, c.arch == picked.c.arch)
                                .values(owner=self.owner, beat=self._now())
                                .returning(c.arch, c.genes)).all()
        return [Work(key, _genes(genes, key)) for key, genes in rows]

    def beating(self) -> contextlib.AbstractContextManager[None]:
        """Heartbeats for every candidate this process holds while the block runs (a claim or
        take is a heartbeat already: the first one comes a period later)."""
        c = CANDIDATES.c

        def beat() -> None:
            with self._single.connect() as conn:
                conn.execute(sa.update(CANDIDATES).where(
                    c.study == self.name, c.owner == self.owner, c.seq.is_(None))
                    .values(beat=self._now()))

        return _periodically(HEARTBEAT_S, beat, at_start=False)

    def finish(self, done: Sequence[Finish]) -> list[Finish]:
        """Record finished candidates, each as one trial of the study with its seq, in one
        transaction; those this process no longer holds (taken over after its heartbeat went
        stale: their new holder records them) are left out. What was recorded."""
        held = list(done)
        while held:
            try:
                with self.engine.begin() as conn:
                    self._finish(conn, held)
                return held
            except _Lost:
                with self.engine.connect() as conn:
                    still = set(conn.execute(sa.select(CANDIDATES.c.arch).where(
                        self._mine(), CANDIDATES.c.arch.in_([f.key for f in held]))).scalars())
                held = [f for f in held if f.key in still]
        return held

    def _mine(self) -> sa.ColumnElement[bool]:
        c = CANDIDATES.c
        return sa.and_(c.study == self.name, c.owner == self.owner, c.seq.is_(None))

    def _finish(self, conn: sa.Connection, done: list[Finish]) -> None:
        c = CANDIDATES.c
        if len(done) > 1:  # one statement checks them all (executemany's rowcount varies)
            checked = conn.execute(sa.update(CANDIDATES).where(
                self._mine(), c.arch.in_([f.key for f in done])).values(beat=self._now()))
            if checked.rowcount != len(done):
                raise _Lost
        # the counts row stays locked until commit: seqs are handed out in commit order
        count = self._counts().values(finished=COUNTS.c.finished + len(done)).returning(
            COUNTS.c.finished)
        if self.waker.postgres:  # whoever waits for results wakes
            count = count.returning(notify_clause(self.waker.channel, self.owner))  # a column
        first = int(conn.execute(count).first()[0]) - len(done) + 1  # type: ignore[index]
        ids = insert_trials(conn, self._study_id, first - 1, [f.trial for f in done])
        moved = conn.execute(
            sa.update(CANDIDATES).where(self._mine(), c.arch == sa.bindparam("k"))
            .values(seq=sa.bindparam("s"), trial_id=sa.bindparam("t")),
            [{"k": f.key, "s": first + i, "t": tid}
             for i, (f, tid) in enumerate(zip(done, ids, strict=True))])
        if len(done) == 1 and moved.rowcount != 1:
            raise _Lost  # rolls the trial back

    def feed(self, after: int) -> list[tuple[int, Result]]:
        """The results finished after the `after`-th, in the order they landed: one query
        that returns only what is new."""
        c, attrs = CANDIDATES.c, USER_ATTRS.c
        query = (sa.select(c.seq, attrs.value_json)
                 .join_from(CANDIDATES, USER_ATTRS, sa.and_(attrs.trial_id == c.trial_id,
                                                             attrs.key == RESULT))
                 .where(c.study == self.name, c.seq > after).order_by(c.seq))
        with self._single.connect() as conn:
            rows = conn.execute(query).all()
        return [(int(seq), result_from_attr(_json(text), f"result #{seq}"))
                for seq, text in rows]

    def held(self) -> dict[str, str | None]:
        """Every candidate not finished, by key: its holder (None while queued)."""
        c = CANDIDATES.c
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(c.arch, c.owner).where(
                c.study == self.name, c.seq.is_(None))).all())  # type: ignore[arg-type]

    def close(self) -> None:
        self.waker.close()
        self.engine.dispose()
        self.storage.engine.dispose()

    def run_beating(self) -> contextlib.AbstractContextManager[None]:
        """The run's heartbeat while its search runs: the RUN_BEAT attribute counts up every
        RUN_BEAT_S, so a worker tells a run that is gone by a count that stops changing (no
        clocks of two machines compared)."""
        count = iter(range(1, 2**62))
        return _periodically(RUN_BEAT_S, lambda: self.set_attr(RUN_BEAT, next(count)))


class _Lost(Exception):
    """A candidate this process finished is no longer its own."""


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None  # result_from_attr says what is wrong


def _genes(text: str, key: str) -> list[int]:
    genes = _json(text)
    if not (isinstance(genes, list) and all(isinstance(g, int) for g in genes)):
        raise UserError(f"The shared study's candidate {key[:12]} holds no genes; the storage "
                        f"was edited or written by another program. Start the run under a new "
                        f"name.")
    return genes


@contextmanager
def _periodically(period: float, action: Callable[[], None],
                  at_start: bool = True) -> Iterator[None]:
    """`action` (now, unless not `at_start`, and) every `period` seconds, on a daemon thread,
    while the block runs."""
    stop = threading.Event()

    def repeat() -> None:
        while not stop.wait(period):
            action()

    if at_start:
        action()
    thread = threading.Thread(target=repeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
