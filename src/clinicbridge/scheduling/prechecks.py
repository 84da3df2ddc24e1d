"""Checks of a booking's time with outside systems, right before it is written.

Availability is computed from what ClinicBridge knows; an outside calendar may have
changed since its last sync. Modules register a check at import (``calendars`` looks at
the provider's outside calendars afresh); the entry points that can afford an outside
call before their transaction (``POST /api/v1/bookings``, ``POST .../reschedule``, the
public booking API) run them with no transaction open, each bounded by its own timeout.
A check refuses the time by raising a ``ClinicBridgeError`` (409, or 503 when the clinic
chose to block bookings it cannot verify).

A booking for ``any`` provider is checked for the provider the engine would choose
(``bookings.providers_at``, read before the transaction); when that provider's calendar
refuses the time, the next free provider is tried, and so on. ``run`` answers the
provider to book: the caller writes the booking for it, so the provider that was checked
is the one booked. The voice receptionist, which runs its tools inside one write
transaction, asks for a check by raising ``voice.backend.PrecheckNeeded`` and runs the
tools again once the check is done (``voice.service.answer_tool_calls``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from clinicbridge.core.errors import ClinicBridgeError
from clinicbridge.db.engine import Database
from clinicbridge.scheduling import availability
from clinicbridge.scheduling.bookings import providers_at
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
_applies_list: list[Applies] = []


def register(check: Check, applies: Applies | None = None) -> Check:
    if check not in _checks:
        _checks.append(check)
        if applies is not None:
            _applies_list.append(applies)
    return check


ANY = "any"


def _applies(session: Session, tenant_id: str, provider_id: str) -> bool:
    if len(_applies_list) < len(_checks):
        return True  # a check without its own test: always run
    return any(applies(session, tenant_id, provider_id) for applies in _applies_list)


def needed(
    session: Session, tenant_id: str, provider_id: str | None, service_id: str | None = None
) -> bool:
    """False when no registered check has anything to look at (then ``run`` may be
    skipped). For ``any``, whether it has for one of the service's providers."""
    if not _checks or not provider_id:
        return False
    if provider_id != ANY:
        return _applies(session, tenant_id, provider_id)
    if service_id is None:
        return False
    eligible = availability.eligible_providers(session.connection(), tenant_id, service_id)
    return any(_applies(session, tenant_id, pid) for pid, _tz in eligible)


def run(
    db: Database,
    settings: Settings,
    tenant_id: str,
    service_id: str,
    provider_id: str | None,
    start: datetime,
    *,
    booking_id: str | None = None,
    now: datetime | None = None,
) -> str | None:
    """Run every registered check (blocking; call it from a thread, not the event loop).

    Answers the provider to book: ``provider_id`` itself, or for ``any`` the first free
    provider whose checks pass (``any`` itself when none has anything to check). A
    refusal raises the check's error (for ``any``: the first one, when all refuse)."""
    with db.read() as session:
        service = session.get(Service, service_id)
        if service is None or service.tenant_id != tenant_id:
            return provider_id  # the booking itself answers the unknown service
        if not needed(session, tenant_id, provider_id, service_id):
            return provider_id
        assert provider_id is not None
        end = start + timedelta(minutes=service.duration_minutes)
        if provider_id != ANY:
            candidates = [(provider_id, True)]
        else:
            free = providers_at(session, tenant_id, service_id, start, now or datetime.now(UTC))
            candidates = [(pid, _applies(session, tenant_id, pid)) for pid in free]
            if not any(checked for _pid, checked in candidates):
                return provider_id  # the engine picks in the booking's transaction
    refused: ClinicBridgeError | None = None
    for candidate, checked in candidates:
        if not checked:
            return candidate
        proposed = Proposed(db, settings, tenant_id, candidate, start, end, booking_id)
        try:
            for check in _checks:
                check(proposed)
        except ClinicBridgeError as exc:
            if provider_id != ANY:
                raise
            refused = refused or exc
            continue
        return candidate
    if refused is not None:
        raise refused
    return provider_id  # nobody is free: the booking answers that (409 with next slots)
