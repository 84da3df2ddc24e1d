"""Waking idle workers when jobs are enqueued.

Two paths: workers in this process are woken right after the enqueueing
transaction commits (a SQLAlchemy ``after_commit`` hook); on PostgreSQL,
workers in other processes hear a ``NOTIFY`` that the database delivers at
commit. Anything missed is caught by polling, so a lost wake-up only costs
latency, never a job.
"""

from __future__ import annotations

import logging
import threading
import weakref

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("clinicbridge.worker")
CHANNEL = "clinicbridge_jobs"
_FLAG = "clinicbridge_jobs_enqueued"
_local_waiters: weakref.WeakSet[threading.Event] = weakref.WeakSet()


def mark_enqueued(session: Session) -> None:
    """Note that this transaction adds due work; notify once per transaction."""
    if session.info.get(_FLAG):
        return
    session.info[_FLAG] = True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def subscribe(wake: threading.Event) -> None:
    _local_waiters.add(wake)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        for wake in list(_local_waiters):
            wake.set()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)


class PostgresListener:
    """A thread holding one connection that LISTENs and sets ``wake`` on each NOTIFY."""

    def __init__(self, url: str, wake: threading.Event) -> None:
        self.url = url
        self.wake = wake
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="clinicbridge-listen", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _run(self) -> None:
        import psycopg

        conninfo = (
            sa.make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        while not self.stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.wake.set()
            except psycopg.Error as exc:
                log.warning("listen failed", extra={"fields": {"error_class": type(exc).__name__}})
                self.stopping.wait(1.0)
