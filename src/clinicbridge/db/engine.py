"""Engine and session factory for SQLite (WAL) and PostgreSQL (psycopg 3).

On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so that two
writers queue on the busy timeout instead of failing half-way with a stale
snapshot; read transactions stay deferred and never block writers (WAL).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("clinicbridge.db")
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_AUTOCHECKPOINT_PAGES = 10_000  # ~40 MB of WAL
_WRITE_OPTION = "clinicbridge_write"
T = TypeVar("T")


def normalize_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _sqlite_path(url: sa.URL) -> Path | None:
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


@dataclass
class Database:
    """The engine plus two session factories: one for reads, one for writes."""

    engine: sa.Engine
    reader: sessionmaker[Session]
    writer: sessionmaker[Session]
    # SQLite: writers of this process queue here, in order, instead of polling the
    # database lock with the driver's sleeping busy handler (which wastes most of
    # the time a lock is free). None on PostgreSQL, where writers do not serialize.
    write_lock: threading.Lock | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success, rolls back on error."""
        lock = self.write_lock
        # A timeout, never a hang: past it, SQLite's own busy timeout takes over.
        held = lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) if lock else False
        try:
            with self.writer.begin() as session:
                yield session
        finally:
            if held and lock is not None:
                lock.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.reader() as session:
            yield session

    async def run_read(self, fn: Callable[[Session], T]) -> T:
        """Run a read-only ``fn(session)`` from async code (see ``_inline``)."""
        return await self._run(self._with_session, fn)

    async def run_read_core(self, fn: Callable[[sa.Connection], T]) -> T:
        """Like ``run_read`` with a Core connection: half the cost, for hot paths."""
        return await self._run(self._with_connection, fn)

    async def run_write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a write transaction from async code.

        On SQLite, when no other writer of this process holds the database, it runs
        inline: writes are serialized anyway, and a thread hop plus the GIL handoffs
        of a busy thread pool cost more than a short transaction. Otherwise (a
        writer is busy, or PostgreSQL) it waits in the thread pool, never on the loop.
        """
        lock = self.write_lock
        if lock is not None and lock.acquire(blocking=False):
            try:
                with self.writer.begin() as session:
                    return fn(session)
            finally:
                lock.release()
        return await anyio.to_thread.run_sync(partial(self._with_write, fn))

    def _with_write(self, fn: Callable[[Session], T]) -> T:
        with self.write() as session:
            return fn(session)

    def _with_session(self, fn: Callable[[Session], T]) -> T:
        with self.read() as session:
            return fn(session)

    def _with_connection(self, fn: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    async def _run(self, runner: Callable[[Callable[[Any], T]], T], fn: Callable[[Any], T]) -> T:
        # SQLite reads in WAL mode never wait for a lock and are pure CPU work, so
        # they run inline: a thread hop would cost more than the query. On
        # PostgreSQL a read waits on the network, so it goes to the thread pool.
        if self.dialect == "sqlite":
            return runner(fn)
        return await anyio.to_thread.run_sync(partial(runner, fn))

    def dispose(self) -> None:
        self.engine.dispose()


def _install_sqlite_hooks(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        # A fallback only: WalCheckpointer keeps the WAL short off the commit path.
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        # Straight to the driver: this runs for every transaction.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if immediate else "BEGIN"
        )


def create_database(url: str, *, pool_size: int = 10) -> Database:
    url = normalize_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _install_sqlite_hooks(engine)
    else:
        engine = sa.create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    write_engine = engine.execution_options(**{_WRITE_OPTION: True})
    return Database(
        engine=engine,
        reader=sessionmaker(engine, expire_on_commit=False),
        writer=sessionmaker(write_engine, expire_on_commit=False),
        write_lock=threading.Lock() if engine.dialect.name == "sqlite" else None,
    )


class WalCheckpointer:
    """Checkpoints SQLite's WAL from a background thread every ``every`` seconds.

    SQLite's automatic checkpoint runs inside whichever COMMIT crosses the
    threshold, and its fsyncs (several ms each) land on that request. Here a
    passive checkpoint, which never blocks readers or writers, runs beside them
    instead; the automatic one stays as a fallback at a much larger WAL size.
    Does nothing on PostgreSQL.
    """

    def __init__(self, db: Database, every: float = 1.0) -> None:
        self.db = db
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, checkpointed)

    def start(self) -> None:
        if self.db.dialect != "sqlite" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="clinicbridge-wal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                raw = self.db.engine.raw_connection()
                try:  # on the driver: a checkpoint cannot run inside a transaction
                    cursor = raw.driver_connection.execute(  # type: ignore[union-attr]
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    )
                    self.last = tuple(cursor.fetchone())
                finally:
                    raw.close()
            except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
                log.warning(
                    "wal checkpoint failed", extra={"fields": {"error_class": type(exc).__name__}}
                )
