"""Tables owned by the worker."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime


class WorkerHeartbeat(Base):
    """One row per live worker; ``/readyz`` checks that one is fresh."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


ACTIVE_STATES = ("pending", "running", "failed")


class Job(Base):
    """A unit of background work, written in the transaction that caused it.

    States: pending → running → succeeded | failed (will retry) | dead; any
    not-yet-finished job can be cancelled. ``attempts`` counts claims.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: due jobs of a queue, oldest first.
        sa.Index(
            "ix_jobs_due",
            "queue",
            "run_at",
            postgresql_where=sa.text("state IN ('pending', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'failed')"),
        ),
        # Expired leases of workers that died.
        sa.Index(
            "ix_jobs_leases",
            "locked_until",
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        ),
        # At most one unfinished job per dedupe key.
        sa.Index(
            "uq_jobs_active_dedupe_key",
            "dedupe_key",
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'running', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'running', 'failed')"),
        ),
        sa.Index("ix_jobs_state_kind", "state", "kind"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    queue: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(128))
    payload: Mapped[dict[str, object]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(sa.Integer)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PeriodicTick(Base):
    """One row per (periodic task, clinic, tick): the first worker to insert it runs it."""

    __tablename__ = "periodic_ticks"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "" for global
    tick: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
