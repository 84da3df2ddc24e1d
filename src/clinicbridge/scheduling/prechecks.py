"""Checks of a booking's time with outside systems, right before it is written.

Availability is computed from what ClinicBridge knows; an outside calendar may have
changed since its last sync. Modules register a check at import (``calendars`` looks at
the provider's outside calendars afresh); the entry points that can afford an outside
call before their transaction (``POST /api/v1/bookings``, ``POST .../reschedule``, the
public booking API) run them with no transaction open, each bounded by its own timeout.
A check refuses the time by raising a ``ClinicBridgeError`` (409, or 503 when the clinic
chose to block bookings it cannot verify). A booking for ``any`` provider is checked
after the fact only (the provider is chosen inside the booking's transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import Service
from clinicbridge.settings import Settings


@dataclass(frozen=True)
class Proposed:
    """A time about to be booked: [start, end) for one provider of one clinic."""

    db: Database
    settings: Settings
    tenant_id: str
    provider_id: str
    start: datetime
    end: datetime
    booking_id: str | None = None  # a reschedule's booking


Check = Callable[[Proposed], None]
# Whether a check has anything to look at for (tenant, provider): one cheap query, so
# the common case (no outside system) costs no thread hop and no outside call.
Applies = Callable[[Session, str, str], bool]
_checks: list[Check] = []
_applies: list[Applies] = []


def register(check: Check, applies: Applies | None = None) -> Check:
    if check not in _checks:
        _checks.append(check)
        if applies is not None:
            _applies.append(applies)
    return check


def needed(session: Session, tenant_id: str, provider_id: str | None) -> bool:
    """False when no registered check has anything to look at (then ``run`` may be skipped)."""
    if not _checks or not provider_id or provider_id == "any":
        return False
    if len(_applies) < len(_checks):
        return True  # a check without its own test: always run
    return any(applies(session, tenant_id, provider_id) for applies in _applies)


def run(
    db: Database,
    settings: Settings,
    tenant_id: str,
    service_id: str,
    provider_id: str | None,
    start: datetime,
    *,
    booking_id: str | None = None,
) -> None:
    """Run every registered check (blocking; call it from a thread, not the event loop)."""
    with db.read() as session:
        if not needed(session, tenant_id, provider_id):
            return
        assert provider_id is not None
        service = session.get(Service, service_id)
        if service is None or service.tenant_id != tenant_id:
            return  # the booking itself answers the unknown service
        end = start + timedelta(minutes=service.duration_minutes)
    proposed = Proposed(db, settings, tenant_id, provider_id, start, end, booking_id)
    for check in _checks:
        check(proposed)
