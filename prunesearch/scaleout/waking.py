"""How a process with nothing to do waits for news of its shared study without asking the
database over and over: PostgreSQL's LISTEN/NOTIFY (every process that queues candidates,
finishes one or ends the run notifies the study's channel), SQLite's back-off (one machine,
no notifications: waits that double from 50 ms up to a second, reset by work)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import sqlalchemy as sa

BACKOFF_S = (0.05, 1.0)  # SQLite: the first and the longest wait


def channel_of(study: str) -> str:
    """A notification channel per study (a valid identifier whatever the study's name)."""
    return "prunesearch_" + hashlib.sha256(study.encode()).hexdigest()[:24]


def notify_clause(channel: str, payload: str) -> sa.ColumnElement[Any]:
    """pg_notify as an expression, so a statement the writer runs anyway notifies too (in
    its RETURNING clause): the notification goes out when its transaction commits."""
    return sa.func.pg_notify(channel, payload)


class Waker:
    """`me`: the payload this process's own notifications carry (news to others only)."""

    def __init__(self, engine: sa.Engine, channel: str, me: str) -> None:
        self.engine, self.channel, self.me = engine, channel, me
        self.postgres = engine.dialect.name == "postgresql"
        self._listener: Any = None  # psycopg's connection, held for LISTEN
        self._backoff = BACKOFF_S[0]
        self._news = True  # until listening, anything may have happened

    def listen(self) -> None:
        """Start listening (before the first look for work, so no news is missed between
        that look and the first wait)."""
        if self.postgres and self._listener is None:
            pooled = self.engine.raw_connection()
            self._listener = pooled.driver_connection
            pooled.detach()  # autocommit from now on: never back to the pool
            self._listener.autocommit = True
            self._listener.execute(f'LISTEN "{self.channel}"')

    def wait(self, timeout: float) -> None:
        """Until a notification arrives or `timeout` seconds pass (SQLite: the back-off)."""
        if not self.postgres:
            time.sleep(min(self._backoff, timeout))
            self._backoff = min(2 * self._backoff, BACKOFF_S[1])
            return
        self.listen()
        for note in self._listener.notifies(timeout=timeout, stop_after=1):
            self._news |= note.payload != self.me

    def news(self) -> bool:
        """Whether another process notified since the last call (always, without
        notifications): a reader skips its query when nothing can have changed. Reads what
        the server has sent already; no round trip."""
        if self._listener is None:
            return True
        for note in self._listener.notifies(timeout=0):
            self._news |= note.payload != self.me
        news, self._news = self._news, False
        return news

    def worked(self) -> None:
        """Work was found: the next SQLite wait starts short again."""
        self._backoff = BACKOFF_S[0]

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
