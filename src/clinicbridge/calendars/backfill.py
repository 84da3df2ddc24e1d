"""Export backfill: a connection that starts exporting bookings (created with
``export_bookings``, or switched on later) gets the provider's future bookings written
into its calendar, not only those that change from then on.

The job ``calendars.export_backfill`` takes the provider's standing future bookings
(booked or confirmed, starting from now on) in start order, ``BATCH`` at a time, and
brings each in line through ``export.export_booking``; while more remain it queues
itself again with a cursor (the last booking's start and id), so a large backlog is
many short jobs and a failure retries one batch. Idempotent: ``calendar_exports`` keeps
each booking's outside event id and version, so a job run twice (or a booking that the
change-driven export already wrote) writes nothing again.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.calendars.export import export_booking
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.sync import SYNCABLE
from clinicbridge.jobs.queue import EnqueuedJob, enqueue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.scheduling.models import Booking
from clinicbridge.vault.shared import shared_vault

KIND = "calendars.export_backfill"
BATCH = 50
STANDING = ("booked", "confirmed")


def queue_backfill(
    session: Session,
    connection: CalendarConnection,
    now: datetime,
    *,
    since: datetime | None = None,
    after: tuple[datetime, str] | None = None,
) -> EnqueuedJob:
    """In the caller's transaction: bookings starting from ``since`` (default ``now``);
    ``after`` is the cursor of the batch done before."""
    payload: dict[str, str] = {
        "connection_id": connection.id,
        "from": (since or now).isoformat(),
    }
    if after is not None:
        payload |= {"after_start": after[0].isoformat(), "after_id": after[1]}
    cursor = after[1] if after is not None else "start"
    return enqueue(
        session,
        KIND,
        payload,
        now=now,
        tenant_id=connection.tenant_id,
        dedupe_key=f"{KIND}:{connection.id}:{cursor}",
    )


def _batch(
    session: Session,
    connection: CalendarConnection,
    since: datetime,
    after: tuple[datetime, str] | None,
) -> list[tuple[str, datetime]]:
    stmt = sa.select(Booking.id, Booking.starts_at).where(
        Booking.tenant_id == connection.tenant_id,
        Booking.provider_id == connection.provider_id,
        Booking.status.in_(STANDING),
        Booking.starts_at >= since,
    )
    if after is not None:
        stmt = stmt.where(
            sa.or_(
                Booking.starts_at > after[0],
                sa.and_(Booking.starts_at == after[0], Booking.id > after[1]),
            )
        )
    rows = session.execute(stmt.order_by(Booking.starts_at, Booking.id).limit(BATCH)).all()
    return [(row.id, row.starts_at) for row in rows]


def backfill(job: JobContext) -> int:
    """One batch; returns how many calendar writes it made (for tests and logs)."""
    if job.settings is None:
        raise RuntimeError("the export backfill needs the service settings (master key file)")
    vault = shared_vault(job.db, job.settings.master_key_file)
    connection_id = str(job.payload["connection_id"])
    since = datetime.fromisoformat(str(job.payload["from"]))
    after = None
    if "after_id" in job.payload:
        after = (
            datetime.fromisoformat(str(job.payload["after_start"])),
            str(job.payload["after_id"]),
        )
    with job.db.read() as session:
        connection = session.get(CalendarConnection, connection_id)
        if (
            connection is None
            or not connection.export_bookings
            or connection.status not in SYNCABLE
        ):
            return 0  # deleted, switched off or waiting for a new authorization
        batch = _batch(session, connection, since, after)
    written = 0
    for booking_id, _start in batch:
        written += export_booking(job.db, vault, booking_id, job.now())
    if len(batch) == BATCH:
        last_id, last_start = batch[-1]
        with job.db.write() as session:
            row = session.get(CalendarConnection, connection_id)
            if row is not None:
                queue_backfill(session, row, job.now(), since=since, after=(last_start, last_id))
    return written


@registry.handler(KIND)
def run(job: JobContext) -> None:
    backfill(job)
