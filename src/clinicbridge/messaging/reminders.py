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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.booking_messages import message_variables
from clinicbridge.messaging.models import CHANNELS
from clinicbridge.messaging.reminder_models import (
    DEFAULT_CHANNELS,
    DEFAULT_MIN_LEAD,
    DEFAULT_OFFSETS,
    DEFAULT_QUIET_END,
    DEFAULT_QUIET_START,
    BookingReminder,
    ReminderRule,
)
from clinicbridge.messaging.service import integration_for, opted_out, queue_message, recipient
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import events
from clinicbridge.scheduling.models import Booking
from clinicbridge.vault.shared import shared_vault

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
class Rule:
    offsets: tuple[int, ...] = DEFAULT_OFFSETS
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    quiet_start: int = DEFAULT_QUIET_START
    quiet_end: int = DEFAULT_QUIET_END
    min_lead_minutes: int = DEFAULT_MIN_LEAD
    enabled: bool = True


DEFAULT_RULE = Rule()


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


# --- rules ------------------------------------------------------------------------------


def _check_rule(offsets: Sequence[int], channels: Sequence[str], quiet_start: int,
                quiet_end: int, min_lead_minutes: int) -> None:  # fmt: skip
    if not offsets or any(not 1 <= o <= 60 * 24 * 60 for o in offsets):
        raise InvalidInputError.one("offsets", "give minutes before the start, 1 to 86,400")
    if len(set(offsets)) != len(offsets):
        raise InvalidInputError.one("offsets", "must not repeat")
    if (
        not channels
        or any(c not in CHANNELS for c in channels)
        or len(set(channels)) != len(channels)
    ):
        raise InvalidInputError.one("channels", f"give distinct channels of {', '.join(CHANNELS)}")
    for name, minute in (("quiet_start", quiet_start), ("quiet_end", quiet_end)):
        if not 0 <= minute < 24 * 60:
            raise InvalidInputError.one(name, "minutes after midnight, 0 to 1439")
    if min_lead_minutes < 0:
        raise InvalidInputError.one("min_lead_minutes", "must not be negative")


def set_rule(
    session: Session,
    tenant_id: str,
    *,
    now: datetime,
    service_id: str | None = None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    quiet_start: int = DEFAULT_QUIET_START,
    quiet_end: int = DEFAULT_QUIET_END,
    min_lead_minutes: int = DEFAULT_MIN_LEAD,
    enabled: bool = True,
) -> ReminderRule:
    """Create or replace the clinic's default rule (``service_id`` None) or a service's.
    Applies to reminders planned from now on."""
    _check_rule(offsets, channels, quiet_start, quiet_end, min_lead_minutes)
    rule = session.scalars(
        sa.select(ReminderRule).where(
            ReminderRule.tenant_id == tenant_id,
            ReminderRule.service_id.is_(None)
            if service_id is None
            else ReminderRule.service_id == service_id,
        )
    ).first()
    if rule is None:
        rule = ReminderRule(
            id=new_id("rmr"), tenant_id=tenant_id, service_id=service_id, created_at=now
        )
        session.add(rule)
    rule.offsets, rule.channels = list(offsets), list(channels)
    rule.quiet_start, rule.quiet_end = quiet_start, quiet_end
    rule.min_lead_minutes, rule.enabled, rule.updated_at = min_lead_minutes, enabled, now
    session.flush()
    return rule


class _Rules:
    """Each clinic's timezone and rules, loaded once per clinic (per transaction or batch
    run); a service's own rule wins over the clinic's default, which wins over ours."""

    def __init__(self) -> None:
        self._clinics: dict[str, tuple[ZoneInfo, dict[str | None, Rule]]] = {}

    def _load(self, session: Session, tenant_id: str) -> tuple[ZoneInfo, dict[str | None, Rule]]:
        found = self._clinics.get(tenant_id)
        if found is None:
            tz = session.scalar(sa.select(Tenant.timezone).where(Tenant.id == tenant_id))
            rows = session.execute(
                sa.select(ReminderRule).where(ReminderRule.tenant_id == tenant_id)
            ).scalars()
            rules = {
                r.service_id: Rule(
                    tuple(int(o) for o in r.offsets),
                    tuple(str(c) for c in r.channels),
                    r.quiet_start,
                    r.quiet_end,
                    r.min_lead_minutes,
                    r.enabled,
                )
                for r in rows
            }
            found = self._clinics[tenant_id] = (ZoneInfo(tz or "UTC"), rules)
        return found

    def get(
        self, session: Session, tenant_id: str, service_id: str | None
    ) -> tuple[ZoneInfo, Rule]:
        tz, rules = self._load(session, tenant_id)
        rule = rules.get(service_id) or rules.get(None) or DEFAULT_RULE
        return tz, rule


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
    rules: _Rules,
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
        _schedule(session, [_upcoming(booking)], _Rules(), ctx.now, skip_offsets=planned)
    elif action == "rescheduled":
        cancel_reminders(session, booking.id, ctx.now, "booking rescheduled")
        if booking.status in REMINDED_STATUSES:
            _schedule(session, [_upcoming(booking)], _Rules(), ctx.now, replace=True)
    elif action in _ENDING_ACTIONS:
        cancel_reminders(session, booking.id, ctx.now, f"booking {action.replace('_', ' ')}")


# --- batch ------------------------------------------------------------------------------


def schedule_upcoming(
    db: Database, *, now: datetime, tenant_id: str | None = None, batch: int = BATCH
) -> int:
    """Plan reminders for every upcoming booked or confirmed booking that has none yet,
    ``batch`` bookings per transaction; returns how many reminder jobs were created.
    Safe to run again (and next to live bookings): rows and jobs are unique."""
    rules = _Rules()
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


# --- the job ----------------------------------------------------------------------------


def _skip(row: BookingReminder, reason: str, now: datetime) -> None:
    row.status, row.reason, row.updated_at = "skipped", reason[:500], now
    log.info(
        "reminder skipped",
        extra={"booking_id": row.booking_id, "offset": row.offset_minutes, "reason": reason},
    )


def unavailable(session: Session, tenant_id: str, patient_id: str, channel: str) -> str | None:
    """Why ``channel`` cannot carry a reminder to this patient now, or None if it can."""
    if opted_out(session, tenant_id, patient_id, channel):
        return "opted out"
    if recipient(session, tenant_id, patient_id, channel) is None:
        return "no address"
    if integration_for(session, tenant_id, channel) is None:
        return "no integration"
    return None


@registry.handler(REMINDER_KIND, max_attempts=5)
def send_reminder(job: JobContext) -> None:
    """At the reminder's time: still wanted? then queue it on the first channel that works."""
    booking_id, offset = str(job.payload["booking_id"]), int(job.payload["offset"])
    planned_start = datetime.fromisoformat(str(job.payload["starts_at"]))
    now = job.now()
    with job.db.write() as session:
        row = session.scalars(
            sa.select(BookingReminder).where(
                BookingReminder.booking_id == booking_id,
                BookingReminder.offset_minutes == offset,
            )
        ).first()
        if row is None or row.status != "scheduled" or row.starts_at != planned_start:
            return  # cancelled, done already, or replaced by a reschedule: not this job's
        row.job_id = job.job_id
        booking = session.get(Booking, booking_id)
        if booking is None or booking.status not in REMINDED_STATUSES:
            _skip(row, f"booking is {booking.status if booking else 'gone'}", now)
            return
        if booking.starts_at != row.starts_at:
            _skip(row, "booking moved", now)
            return
        if booking.starts_at <= now:
            _skip(row, "appointment already started", now)
            return
        _, rule = _Rules().get(session, booking.tenant_id, booking.service_id)
        if not rule.enabled:
            _skip(row, "reminders disabled", now)
            return
        tenant = session.get(Tenant, booking.tenant_id)
        patient = session.get(Patient, booking.patient_id)
        assert tenant is not None and patient is not None
        why: list[str] = []
        variables: dict[str, Any] | None = None
        for channel in rule.channels:
            problem = unavailable(session, tenant.id, patient.id, channel)
            if problem is None:
                if variables is None:
                    vault = (
                        shared_vault(job.db, job.settings.master_key_file)
                        if job.settings is not None
                        else None
                    )
                    variables = message_variables(
                        session, job.settings, booking, tenant, patient, vault=vault
                    )
                try:
                    message = queue_message(
                        session,
                        Ctx.system(tenant.id, "reminders", now),
                        patient_id=patient.id,
                        channel=channel,
                        template=TEMPLATE,
                        variables=variables,
                        booking_id=booking.id,
                        dedupe_key=f"reminder:{booking.id}:{offset}:{booking.starts_at.isoformat()}",
                    )
                except InvalidInputError as exc:
                    problem = exc.errors[0].message if exc.errors else str(exc)
                else:
                    row.status, row.channel, row.message_id = "sent", channel, message.id
                    row.reason = "; ".join(why) or None
                    row.updated_at = now
                    return
            why.append(f"{channel}: {problem}")
        _skip(row, "no channel: " + "; ".join(why), now)
