"""Worker liveness: each worker refreshes its row; readiness reads the freshest."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.ids import new_id
from clinicbridge.jobs.models import WorkerHeartbeat

# Rows of workers that died without saying goodbye are removed after this.
STALE_AFTER = timedelta(hours=1)


def register(session: Session, now: datetime) -> str:
    worker_id = new_id("wrk")
    session.add(
        WorkerHeartbeat(
            id=worker_id,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=now,
            last_seen_at=now,
        )
    )
    return worker_id


def beat(session: Session, worker_id: str, now: datetime) -> None:
    session.execute(
        sa.update(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id).values(last_seen_at=now)
    )


def unregister(session: Session, worker_id: str) -> None:
    session.execute(sa.delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))


def purge_stale(session: Session, now: datetime) -> None:
    session.execute(
        sa.delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen_at < now - STALE_AFTER)
    )


def freshest_heartbeat_age(session: Session, now: datetime) -> float | None:
    latest = session.scalar(sa.select(sa.func.max(WorkerHeartbeat.last_seen_at)))
    if latest is None:
        return None
    if latest.tzinfo is None:  # aggregate results bypass the column type on SQLite
        latest = datetime.fromisoformat(str(latest)).replace(tzinfo=now.tzinfo)
    return max(0.0, (now - latest).total_seconds())
