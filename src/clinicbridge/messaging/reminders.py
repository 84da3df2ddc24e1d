"""Appointment reminders: rules per clinic or service, scheduled as jobs with the booking.

A booking change hook (``scheduling.events.on_change``) runs in the change's own
transaction: a booking created (or a hold confirmed) schedules its reminders, a
reschedule cancels their jobs and plans new ones, and a booking that ends
(cancelled, expired, no-show, completed) cancels them. A booking change that rolls
back takes its reminders with it.

Each reminder is a ``booking_reminders`` row (unique per booking and offset: planning
twice never makes two) and, unless skipped, a ``messaging.reminder`` job due at the
reminder time. Due times inside the clinic's quiet hours (its own timezone, DST
included) move to the end of the quiet hours; if that is later than the start minus
``min_lead_minutes``, the reminder is skipped and the reason kept on the row.

The job checks again when it runs: the booking must still be booked or confirmed and
start when planned. Channels are tried in the rule's order; one the patient opted out
of, has no address for, or the clinic has no integration for falls back to the next.

``schedule_upcoming`` plans reminders for every upcoming booking that has none, in
batches (keyset over booking ids, Core rows, no ORM objects), idempotently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue
from clinicbridge.jobs.models import Job
from clinicbridge.messaging.reminder_models import BookingReminder
from clinicbridge.messaging.reminder_rules import Rule, Rules
from clinicbridge.scheduling import events
from clinicbridge.scheduling.models import Booking

log = logging.getLogger(__name__)

REMINDER_KIND = "messaging.reminder"
TEMPLATE = "booking.reminder"
BATCH = 2_000
REMINDED_STATUSES = ("booked", "confirmed")  # held slots get reminders once confirmed
TOO_LATE = "too late after quiet hours"
_REMINDERS = cast(sa.Table, BookingReminder.__table__)
_JOBS = cast(sa.Table, Job.__table__)
# Spelled as the partial unique index on jobs.dedupe_key, so the planner can use it.
_ACTIVE_JOB = sa.text("state IN ('pending', 'running', 'failed')")
_ENDING_ACTIONS = ("cancelled", "expired", "no_show", "completed")


@dataclass(frozen=True)
class Plan:
    """What one reminder of one booking becomes: a job at ``due_at``, or skipped."""

    offset: int
    due_at: datetime
    status: str  # scheduled | skipped
    reason: str | None = None


@dataclass(frozen=True)
class _Upcoming:
    booking_id: str
    tenant_id: str
    service_id: str
    starts_at: datetime


# --- planning ---------------------------------------------------------------------------


def after_quiet_hours(due: datetime, tz: ZoneInfo, quiet_start: int, quiet_end: int) -> datetime:
    """``due``, or the end of the quiet hours it falls in: on the clinic's wall clock, so
    08:00 is 08:00 on either side of a DST change. Equal bounds: no quiet hours."""
    if quiet_start == quiet_end:
        return due
    local = due.astimezone(tz)
    minute = local.hour * 60 + local.minute
    if quiet_start < quiet_end:
        inside = quiet_start <= minute < quiet_end
    else:  # across midnight, e.g. 21:00-08:00
        inside = minute >= quiet_start or minute < quiet_end
    if not inside:
        return due
    day: date = local.date()
    if quiet_start > quiet_end and minute >= quiet_start:
        day += timedelta(days=1)  # the evening part: the next morning
    end = datetime.combine(day, time(quiet_end // 60, quiet_end % 60), tzinfo=tz)
    return end.astimezone(UTC)


def plan(starts_at: datetime, rule: Rule, tz: ZoneInfo, now: datetime) -> list[Plan]:
    """The reminders of a booking starting at ``starts_at`` under ``rule``."""
    plans = []
    latest = starts_at - timedelta(minutes=rule.min_lead_minutes)
    for offset in rule.offsets:
        due = starts_at - timedelta(minutes=offset)
        moved = after_quiet_hours(due, tz, rule.quiet_start, rule.quiet_end)
        if moved != due and moved > latest:
            plans.append(Plan(offset, moved, "skipped", TOO_LATE))
        elif moved < now:
            plans.append(Plan(offset, moved, "skipped", "due before the booking was made"))
        else:
            plans.append(Plan(offset, moved, "scheduled"))
    return plans


def job_dedupe_key(booking_id: str, offset: int) -> str:
    return f"{REMINDER_KIND}:{booking_id}:{offset}"


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_REMINDERS)


def _schedule(
    session: Session,
    bookings: Iterable[_Upcoming],
    rules: Rules,
    now: datetime,
    *,
    replace: bool = False,
    skip_offsets: frozenset[int] = frozenset(),
) -> int:
    """Rows and jobs for ``bookings``; returns how many jobs were planned. Without
    ``replace`` an existing row (same booking and offset) is kept as it is."""
    rows: list[dict[str, Any]] = []
    jobs: list[queue.NewJob] = []
    for b in bookings:
        tz, rule = rules.get(session, b.tenant_id, b.service_id)
        if not rule.enabled:
            continue
        start_text = b.starts_at.isoformat()
        for p in plan(b.starts_at, rule, tz, now):
            if p.offset in skip_offsets:
                continue
            rows.append(
                {
                    "id": new_id("brm"),
                    "tenant_id": b.tenant_id,
                    "booking_id": b.booking_id,
                    "offset_minutes": p.offset,
                    "starts_at": b.starts_at,
                    "due_at": p.due_at,
                    "job_id": None,
                    "status": p.status,
                    "channel": None,
                    "message_id": None,
                    "reason": p.reason,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if p.status == "skipped":
                log.info(
                    "reminder skipped",
                    extra={"booking_id": b.booking_id, "offset": p.offset, "reason": p.reason},
                )
                continue
            jobs.append(
                queue.NewJob(
                    REMINDER_KIND,
                    {"booking_id": b.booking_id, "offset": p.offset, "starts_at": start_text},
                    tenant_id=b.tenant_id,
                    run_at=p.due_at,
                    dedupe_key=job_dedupe_key(b.booking_id, p.offset),
                    max_attempts=5,
                )
            )
    if not rows:
        return 0
    stmt = _insert(session)
    if replace:
        fresh = ("starts_at", "due_at", "job_id", "status", "channel", "message_id", "reason")
        stmt = stmt.on_conflict_do_update(
            index_elements=["booking_id", "offset_minutes"],
            set_={**{c: stmt.excluded[c] for c in fresh}, "updated_at": stmt.excluded.updated_at},
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["booking_id", "offset_minutes"])
    session.connection().execute(stmt, rows)
    queue.enqueue_many(session, jobs, now=now)
    return len(jobs)


def cancel_reminders(session: Session, booking_id: str, now: datetime, reason: str) -> int:
    """Cancel a booking's pending reminder jobs and rows (in the caller's transaction);
    returns how many jobs were cancelled. A job already running finds its row cancelled."""
    offsets = session.scalars(
        sa.select(BookingReminder.offset_minutes).where(BookingReminder.booking_id == booking_id)
    ).all()
    if not offsets:
        return 0
    result = session.connection().execute(
        sa.update(_JOBS)
        .where(_JOBS.c.dedupe_key.in_([job_dedupe_key(booking_id, o) for o in offsets]))
        .where(_ACTIVE_JOB, _JOBS.c.kind == REMINDER_KIND)
        .values(
            state="cancelled", locked_by=None, locked_until=None, finished_at=now, updated_at=now
        )
    )
    session.connection().execute(
        sa.update(_REMINDERS)
        .where(_REMINDERS.c.booking_id == booking_id, _REMINDERS.c.status == "scheduled")
        .values(status="cancelled", reason=reason, updated_at=now)
    )
    return int(result.rowcount or 0)


def _upcoming(booking: Booking) -> _Upcoming:
    return _Upcoming(booking.id, booking.tenant_id, booking.service_id, booking.starts_at)


@events.on_change
def on_booking_change(session: Session, ctx: Ctx, booking: Booking, action: str) -> None:
    """Runs inside every booking change's transaction (see scheduling.events)."""
    if action in ("created", "confirmed"):
        if booking.status not in REMINDED_STATUSES:
            return
        planned = frozenset(
            session.scalars(
                sa.select(BookingReminder.offset_minutes).where(
                    BookingReminder.booking_id == booking.id
                )
            ).all()
        )  # confirming a booked booking: its reminders exist already
        _schedule(session, [_upcoming(booking)], Rules(), ctx.now, skip_offsets=planned)
    elif action == "rescheduled":
        cancel_reminders(session, booking.id, ctx.now, "booking rescheduled")
        if booking.status in REMINDED_STATUSES:
            _schedule(session, [_upcoming(booking)], Rules(), ctx.now, replace=True)
    elif action in _ENDING_ACTIONS:
        cancel_reminders(session, booking.id, ctx.now, f"booking {action.replace('_', ' ')}")


# --- batch ------------------------------------------------------------------------------


def schedule_upcoming(
    db: Database, *, now: datetime, tenant_id: str | None = None, batch: int = BATCH
) -> int:
    """Plan reminders for every upcoming booked or confirmed booking that has none yet,
    ``batch`` bookings per transaction; returns how many reminder jobs were created.
    Safe to run again (and next to live bookings): rows and jobs are unique."""
    rules = Rules()
    no_reminders = ~sa.exists().where(_REMINDERS.c.booking_id == Booking.id)
    base = sa.select(Booking.id, Booking.tenant_id, Booking.service_id, Booking.starts_at).where(
        Booking.status.in_(REMINDED_STATUSES), Booking.starts_at > now, no_reminders
    )
    if tenant_id is not None:
        base = base.where(Booking.tenant_id == tenant_id)
    last: str | None = None
    total = 0
    while True:
        stmt = base if last is None else base.where(Booking.id > last)
        with db.write() as session:
            found = session.execute(stmt.order_by(Booking.id).limit(batch)).all()
            if not found:
                return total
            total += _schedule(session, [_Upcoming(*row) for row in found], rules, now)
        last = found[-1][0]
        if len(found) < batch:
            return total
