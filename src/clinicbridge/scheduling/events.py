"""What a booking change sets off, in the transaction of the change itself.

Every change of a booking writes a ``booking_changes`` row, an audit event, a
``booking.<action>`` outbound webhook event, and one job for each module that
subscribed (reminders, calendar export, video links...). Because all of it is in
the caller's transaction, a change that rolls back leaves no event behind, and a
committed change can never miss one.

A module subscribes at import time with its own job kind and registers a
handler for that kind on the job registry; the job's payload names the booking,
the change and the action. Handlers must be idempotent (jobs can run twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import NewEvent, append_many
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.jobs import queue
from clinicbridge.scheduling.models import Booking, BookingChange
from clinicbridge.webhooks.outbound import publish

_subscribers: list[str] = []
# Called inside the change's transaction, for work that must commit or roll back with
# it (reminder jobs replaced on reschedule, cancelled with the booking).
ChangeHook = Callable[[Session, Ctx, Booking, str], None]  # (session, ctx, booking, action)
_hooks: list[ChangeHook] = []
_INSERT_CHANGE = cast(
    sa.Table, BookingChange.__table__
).insert()  # Core: the ORM's bulk path costs more

# Outbound event types are ``booking.<action>``; audit actions use the clinic's verbs.
AUDIT_ACTIONS = {
    "created": "booking.create",
    "held": "booking.hold",
    "rescheduled": "booking.reschedule",
    "cancelled": "booking.cancel",
    "confirmed": "booking.confirm",
    "no_show": "booking.no_show",
    "completed": "booking.complete",
    "expired": "booking.expire",
}


def subscribe(kind: str) -> None:
    """Enqueue a job of ``kind`` on every booking change from now on."""
    if kind not in _subscribers:
        _subscribers.append(kind)


def unsubscribe(kind: str) -> None:
    if kind in _subscribers:
        _subscribers.remove(kind)


def subscribers() -> tuple[str, ...]:
    return tuple(_subscribers)


def on_change(hook: ChangeHook) -> ChangeHook:
    """Run ``hook`` in every booking change's own transaction (decorator)."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def event_data(booking: Booking) -> dict[str, Any]:
    """What outbound events and listeners learn: ids and times, no patient details."""
    return {
        "id": booking.id,
        "status": booking.status,
        "start": booking.starts_at,
        "end": booking.ends_at,
        "service_id": booking.service_id,
        "provider_id": booking.provider_id,
        "location_id": booking.location_id,
        "patient_id": booking.patient_id,
        "confirmation_code": booking.confirmation_code,
        "source": booking.source,
        "hold_expires_at": booking.hold_expires_at,
        "version": booking.version,
    }


def record_change(
    session: Session,
    ctx: Ctx,
    booking: Booking,
    action: str,
    *,
    from_status: str | None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """History row, audit event, outbound event and subscriber jobs for one change;
    returns the history row's id."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown booking action {action!r}")
    session.flush()  # the booking row first: the history row refers to it
    change_id = new_id("bch")
    row = {
        "id": change_id,
        "tenant_id": booking.tenant_id,
        "booking_id": booking.id,
        "action": action,
        "from_status": from_status,
        "to_status": booking.status,
        "details": {k: _plain(v) for k, v in details.items()} if details else None,
        "actor_type": ctx.actor_type,
        "actor_id": ctx.actor_id,
        "at": ctx.now,
    }
    session.connection().execute(_INSERT_CHANGE, [row])
    diff: dict[str, Any] = {"status": [from_status, booking.status]}
    if details:
        diff.update({k: _plain(v) for k, v in details.items()})
    append_many(session, [_audit_event(ctx, booking, action, diff)])
    publish(
        session,
        tenant_id=booking.tenant_id,
        event_type=f"booking.{action}",
        data=event_data(booking),
        now=ctx.now,
    )
    payload = {
        "booking_id": booking.id,
        "change_id": change_id,
        "action": action,
        "from_status": from_status,
    }
    jobs = [
        queue.NewJob(kind, payload, tenant_id=booking.tenant_id, dedupe_key=f"{kind}:{change_id}")
        for kind in _subscribers
    ]
    queue.enqueue_many(session, jobs, now=ctx.now)
    for hook in _hooks:
        hook(session, ctx, booking, action)
    return change_id


def _audit_event(ctx: Ctx, booking: Booking, action: str, diff: dict[str, Any]) -> NewEvent:
    return NewEvent(
        tenant_id=booking.tenant_id,
        actor_type=ctx.actor_type,
        actor_id=ctx.actor_id,
        action=AUDIT_ACTIONS[action],
        resource_type="booking",
        occurred_at=ctx.now,
        resource_id=booking.id,
        request_id=ctx.request_id,
        ip=ctx.ip,
        diff=diff,
    )


def _plain(value: Any) -> Any:
    """JSON-native: times as ISO 8601 strings, in lists too (``[before, after]``)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value
