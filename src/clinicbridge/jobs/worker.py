"""The worker loop: heartbeat and housekeeping, in a thread or its own process.

It runs inside ``clinicbridge serve`` (embedded default) or as ``clinicbridge
worker`` next to API processes that were started with ``--no-worker``.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from clinicbridge.core import idempotency, sessions
from clinicbridge.core.clock import Clock
from clinicbridge.db.engine import Database
from clinicbridge.jobs import heartbeat

log = logging.getLogger("clinicbridge.worker")
HOUSEKEEPING_EVERY = 60.0


class Worker:
    def __init__(self, db: Database, clock: Clock, *, heartbeat_seconds: float) -> None:
        self.db = db
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.stopping = threading.Event()
        self.worker_id: str | None = None

    def run(self) -> None:
        """Run until ``stop()``; database hiccups are logged and retried, never fatal."""
        with self.db.write() as session:
            self.worker_id = heartbeat.register(session, self.clock.now())
        log.info("worker started", extra={"fields": {"worker_id": self.worker_id}})
        next_housekeeping = 0.0
        try:
            while not self.stopping.is_set():
                try:
                    with self.db.write() as session:
                        heartbeat.beat(session, self.worker_id, self.clock.now())
                    if time.monotonic() >= next_housekeeping:
                        self.housekeeping()
                        next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY
                except SQLAlchemyError as exc:
                    log.warning(
                        "worker tick failed", extra={"fields": {"error_class": type(exc).__name__}}
                    )
                self.stopping.wait(self.heartbeat_seconds)
        finally:
            with self.db.write() as session:
                heartbeat.unregister(session, self.worker_id)
            log.info("worker stopped", extra={"fields": {"worker_id": self.worker_id}})

    def housekeeping(self) -> None:
        now = self.clock.now()
        purged_keys = idempotency.purge_expired(self.db, now)
        with self.db.write() as session:
            purged_sessions = sessions.purge_expired(session, now)
            heartbeat.purge_stale(session, now)
        if purged_keys or purged_sessions:
            log.info(
                "housekeeping",
                extra={
                    "fields": {
                        "idempotency_records_purged": purged_keys,
                        "sessions_purged": purged_sessions,
                    }
                },
            )

    def stop(self) -> None:
        self.stopping.set()


class WorkerThread:
    """The embedded worker of ``clinicbridge serve``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, name="clinicbridge-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
