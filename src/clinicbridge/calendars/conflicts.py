"""Conflicts found later: an outside event now overlaps a booking that stands.

Availability never offers time that a busy block covers, so a conflict only appears
when the outside calendar changes after the booking was made (the practitioner added
something over an appointment). It is never resolved by cancelling anything: after
every sync round that changed blocks, ``check_provider`` opens one
``calendar_conflict`` alert per booking in conflict (subject: the booking), with both
sides in its details (the booking's id and times, each overlapping block's connection
and times; no outside event text, which is never stored), refreshes it while it lasts,
and resolves it once no block overlaps (the event moved or went, or the booking was
cancelled or moved). Staff see it in ``GET /api/v1/alerts`` and through the
``integration.unhealthy`` / ``integration.recovered`` outbound events.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.db.engine import Database
from clinicbridge.integrations.alerts import RECOVERED, UNHEALTHY, event_data, open_or_touch
from clinicbridge.integrations.models import Alert
from clinicbridge.scheduling.models import ACTIVE_STATUSES, Booking, BusyBlock
from clinicbridge.webhooks.outbound import publish

RULE = "calendar_conflict"
SUBJECT_TYPE = "booking"


def conflicts(session: Session, provider_id: str, now: datetime) -> dict[str, dict[str, Any]]:
    """Bookings of the provider still to come that imported blocks overlap: id → details."""
    rows = session.execute(
        sa.select(
            Booking.id,
            Booking.starts_at,
            Booking.ends_at,
            BusyBlock.id.label("block_id"),
            BusyBlock.connection_id,
            BusyBlock.starts_at.label("block_start"),
            BusyBlock.ends_at.label("block_end"),
        )
        .join(BusyBlock, BusyBlock.provider_id == Booking.provider_id)
        .where(
            Booking.provider_id == provider_id,
            Booking.status.in_(ACTIVE_STATUSES),
            Booking.ends_at > now,
            BusyBlock.connection_id.is_not(None),
            BusyBlock.starts_at < Booking.ends_at,
            BusyBlock.ends_at > Booking.starts_at,
        )
        .order_by(Booking.id, BusyBlock.starts_at)
    )
    found: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        entry = found[r.id]
        entry.setdefault(
            "booking",
            {"id": r.id, "provider_id": provider_id, "start": r.starts_at.isoformat(),
             "end": r.ends_at.isoformat()},
        )  # fmt: skip
        entry.setdefault("busy", []).append(
            {"block_id": r.block_id, "connection_id": r.connection_id,
             "start": r.block_start.isoformat(), "end": r.block_end.isoformat()}
        )  # fmt: skip
    return dict(found)


def check_provider(
    db: Database, tenant_id: str, provider_id: str, now: datetime
) -> tuple[int, int]:
    """Open, refresh and resolve the provider's conflict alerts; (opened, resolved)."""
    opened = resolved = 0
    with db.read() as session:  # the common case (nothing in conflict, nothing open) writes nothing
        if not conflicts(session, provider_id, now) and not _open_alerts(
            session, tenant_id, provider_id
        ):
            return 0, 0
    with db.write() as session:
        current = conflicts(session, provider_id, now)
        open_alerts = _open_alerts(session, tenant_id, provider_id)
        for booking_id, details in current.items():
            alert = open_alerts.get(booking_id)
            if alert is not None:
                alert.details, alert.last_seen_at = details, now
            elif _open(session, tenant_id, booking_id, details, now):
                opened += 1
        for booking_id, alert in open_alerts.items():
            if booking_id not in current:
                alert.status, alert.resolved_at, alert.last_seen_at = "resolved", now, now
                record_system(
                    session, tenant_id, "alert.resolve", SUBJECT_TYPE, booking_id, now=now,
                    diff={"rule": RULE},
                )  # fmt: skip
                _announce(session, alert, now)
                resolved += 1
    return opened, resolved


def _open_alerts(session: Session, tenant_id: str, provider_id: str) -> dict[str, Alert]:
    return {
        a.subject_id: a
        for a in session.scalars(
            sa.select(Alert).where(
                Alert.tenant_id == tenant_id, Alert.rule == RULE, Alert.status == "open"
            )
        )
        if (a.details.get("booking") or {}).get("provider_id") == provider_id
    }


def _open(
    session: Session, tenant_id: str, booking_id: str, details: dict[str, Any], now: datetime
) -> bool:
    """False when another round opened it first."""
    alert = open_or_touch(session, tenant_id, SUBJECT_TYPE, booking_id, RULE, details, now)
    if alert is not None:
        _announce(session, alert, now)
    return alert is not None


def _announce(session: Session, alert: Alert, now: datetime) -> None:
    session.flush()
    publish(
        session,
        tenant_id=alert.tenant_id,
        event_type=UNHEALTHY if alert.status == "open" else RECOVERED,
        data=event_data(alert, None),
        now=now,
    )
