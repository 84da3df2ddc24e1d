"""Periodic tasks: each cron tick runs once, however many workers are up.

Every worker computes the same ticks; the first to insert the (task, clinic,
tick) row into ``periodic_ticks`` enqueues the job in the same transaction,
the others' inserts do nothing. A worker that was down only catches up the most
recent missed tick, not every one it slept through.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.clock import Clock
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import PeriodicTick
from clinicbridge.jobs.queue import NewJob, enqueue_many
from clinicbridge.jobs.registry import PeriodicTask

TICK_RETENTION = timedelta(days=7)
_EPSILON = timedelta(microseconds=1)


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(PeriodicTick)


class PeriodicScheduler:
    def __init__(self, tasks: list[PeriodicTask], db: Database, clock: Clock) -> None:
        self.tasks = tasks
        self.db = db
        self.clock = clock
        self._next_due: dict[str, datetime] = {}

    def run_due(self) -> int:
        """Enqueue the jobs of every task whose tick has come; returns jobs enqueued."""
        now = self.clock.now()
        enqueued = 0
        for task in self.tasks:
            latest = task.previous_tick(now + _EPSILON)
            due = self._next_due.setdefault(task.name, latest)
            if due <= now:
                enqueued += self._fire(task, latest, now)
                self._next_due[task.name] = task.next_tick(latest)
        return enqueued

    def _fire(self, task: PeriodicTask, tick: datetime, now: datetime) -> int:
        with self.db.write() as session:
            if task.per_tenant:
                tenants = (
                    sa.select(
                        sa.literal(task.name), Tenant.id, sa.literal(tick, PeriodicTick.tick.type)
                    ).where(sa.true())  # lets SQLite parse INSERT ... SELECT ... ON CONFLICT
                )
                stmt = _insert(session).from_select(["name", "tenant_id", "tick"], tenants)
            else:
                stmt = _insert(session).values(name=task.name, tenant_id="", tick=tick)
            won = (
                session.execute(stmt.on_conflict_do_nothing().returning(PeriodicTick.tenant_id))
                .scalars()
                .all()
            )
            payload = {**task.payload, "tick": tick.isoformat()}
            return enqueue_many(
                session,
                (NewJob(task.kind, payload, task.queue, tenant_id or None) for tenant_id in won),
                now=now,
            )


def purge_ticks(session: Session, now: datetime) -> None:
    session.execute(sa.delete(PeriodicTick).where(PeriodicTick.tick < now - TICK_RETENTION))
