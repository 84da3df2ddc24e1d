"""The fresh busy check: right before a booking is written, the provider's outside
calendars are asked about exactly that time (``scheduling.prechecks``).

For each of the provider's connections that import busy time: Google ``events.list``
over the appointment, Graph ``calendarView``, CalDAV ``calendar-query`` with a
time-range; the same rules as the import decide what is busy (free, declined and our
own events are not). One attempt, bounded by the integration's
``busy_check_timeout_seconds`` (3 s by default).

* Busy: the booking is refused with a 409 ``calendar-busy`` (the same words as a slot
  taken) and the connection's sync is queued, so availability stops offering the time.
* Unreachable (timeout, error, open breaker, revoked authorization): the integration's
  ``when_unreachable`` decides: ``allow`` (the default) books and opens a
  ``calendar_unverified`` alert on the connection with the time (the sync's conflict
  check raises ``calendar_conflict`` if an outside event really is there); ``block``
  refuses with a 503 ``calendar-unreachable`` and ``Retry-After``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.calendars import alerts, caldav, google, microsoft
from clinicbridge.calendars.calls import Authorized
from clinicbridge.calendars.events import Instance, Window
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.runtime import context
from clinicbridge.calendars.sync import SYNCABLE, enqueue_sync
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.errors import ClinicBridgeError, ConflictError, ExternalServiceError
from clinicbridge.http import RetryPolicy, Timeouts
from clinicbridge.integrations.models import Integration
from clinicbridge.scheduling import prechecks
from clinicbridge.scheduling.models import Provider
from clinicbridge.vault.shared import shared_vault

log = logging.getLogger("clinicbridge.calendars")
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


class CalendarBusy(ConflictError):
    type_slug = "calendar-busy"
    title = "Slot taken"

    def __init__(self) -> None:
        super().__init__("This time is no longer available.")


class CalendarUnreachable(ClinicBridgeError):
    status = 503
    type_slug = "calendar-unreachable"
    title = "Calendar not reachable"
    retry_after = 30.0

    def __init__(self) -> None:
        super().__init__("The provider's calendar cannot be checked right now; try again.")

    def problem_extra(self) -> dict[str, object]:
        return {"retry_after": int(self.retry_after or 30)}


def _busy(found: list[Instance], window: Window) -> bool:
    return any(instance.span(window) is not None for instance in found)


def applies(session: Session, tenant_id: str, provider_id: str) -> bool:
    return (
        session.scalar(
            sa.select(CalendarConnection.id)
            .where(
                CalendarConnection.tenant_id == tenant_id,
                CalendarConnection.provider_id == provider_id,
                CalendarConnection.import_busy.is_(True),
                CalendarConnection.status.in_(SYNCABLE),
            )
            .limit(1)
        )
        is not None
    )


def check(proposed: prechecks.Proposed) -> None:
    db = proposed.db
    with db.read() as session:
        rows = session.execute(
            sa.select(CalendarConnection, Integration, Provider)
            .join(Integration, Integration.id == CalendarConnection.integration_id)
            .join(Provider, Provider.id == CalendarConnection.provider_id)
            .where(
                CalendarConnection.tenant_id == proposed.tenant_id,
                CalendarConnection.provider_id == proposed.provider_id,
                CalendarConnection.import_busy.is_(True),
                CalendarConnection.status.in_(SYNCABLE),
                Integration.enabled.is_(True),
            )
        ).all()
    if not rows:
        return
    vault = shared_vault(db, proposed.settings.master_key_file)
    for connection, integration, provider in rows:
        window = Window(proposed.start, proposed.end, provider.timezone)
        seconds = float(integration.settings.get("busy_check_timeout_seconds", 3.0))
        client = {"timeouts": Timeouts(seconds, seconds, seconds, seconds), "retry": ONE_ATTEMPT}
        try:
            conn = context(db, vault, integration)
            if connection.connector == "caldav":
                emails = frozenset({provider.email.lower()} if provider.email else ())
                with caldav.CalDavClient(conn, **client) as dav:
                    found = dav.window_events(connection.calendar, window, emails)
            else:
                assert connection.account_id is not None
                tokens = TokenSource(db, vault)
                with Authorized(conn, tokens, connection.account_id, **client) as calls:
                    source = google if connection.connector == "google_calendar" else microsoft
                    found = source.window_events(calls, connection.calendar, window)
        except ExternalServiceError as exc:
            _unreachable(proposed, connection, integration, exc)
            continue
        if _busy(found, window):
            with db.write() as session:
                row = session.get(CalendarConnection, connection.id)
                if row is not None:
                    enqueue_sync(session, row, datetime.now(UTC), reason="busy_check")
            raise CalendarBusy()


def _unreachable(
    proposed: prechecks.Proposed,
    connection: CalendarConnection,
    integration: Integration,
    exc: ExternalServiceError,
) -> None:
    log.warning(
        "calendar busy check failed",
        extra={"fields": {"connection_id": connection.id, "error": exc.detail}},
    )
    if integration.settings.get("when_unreachable") == "block":
        raise CalendarUnreachable() from None
    with proposed.db.write() as session:
        alerts.open_alert(
            session,
            tenant_id=connection.tenant_id,
            subject_type=alerts.FAILING_SUBJECT,
            subject_id=connection.id,
            rule=alerts.UNVERIFIED_RULE,
            details={
                "provider_id": connection.provider_id,
                "start": proposed.start.isoformat(),
                "end": proposed.end.isoformat(),
                "booking_id": proposed.booking_id,
                "error": exc.detail[:300],
            },
            now=datetime.now(UTC),
        )


prechecks.register(check, applies)
