"""A provider's calendar accounts (OAuth grants) and calendar connections.

A connection imports busy time, exports bookings, or both (never neither: a 422 naming
the switches). Creating one checks, with one outside call made outside any transaction,
that the calendar exists and the integration may read it; then the row, its audit
event and its first sync job are written in one transaction. Deleting a connection
deletes its imported blocks with it (foreign key cascade; the schedule-version
triggers fire for each, so availability follows at once); switching its import off
deletes them the same way and stops its push and polling. Another clinic's provider,
integration or connection is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.calendars import alerts, caldav, google, push
from clinicbridge.calendars.backfill import queue_backfill
from clinicbridge.calendars.blocks import count, delete_all
from clinicbridge.calendars.calls import Authorized
from clinicbridge.calendars.errors import CalendarNotAuthorized
from clinicbridge.calendars.models import CalendarAccount, CalendarConnection
from clinicbridge.calendars.runtime import connector_for, context
from clinicbridge.calendars.schemas import (
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    SyncStatus,
)
from clinicbridge.calendars.sync import enqueue_sync
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import (
    ConflictError,
    FieldError,
    InvalidInputError,
    NotFoundError,
)
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.jobs.queue import EnqueuedJob
from clinicbridge.scheduling.models import Provider
from clinicbridge.vault.service import Vault

CALENDAR_CONNECTORS = ("google_calendar", "microsoft_calendar", "caldav")
SWITCHES = ("import_busy", "export_bookings")


class ConnectionExists(ConflictError):
    type_slug = "calendar-connection-exists"
    title = "Calendar already connected"


# --- accounts ---------------------------------------------------------------------------


def list_accounts(session: Session, ctx: Ctx, provider_id: str) -> list[CalendarAccount]:
    get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    stmt = scoped_select(CalendarAccount, ctx.tenant_id).where(
        CalendarAccount.provider_id == provider_id
    )
    return list(session.scalars(stmt.order_by(CalendarAccount.id)))


def delete_account(session: Session, ctx: Ctx, provider_id: str, account_id: str) -> None:
    """Forget the authorization: tokens, connections using it, their imported blocks."""
    account = get_scoped(
        session, CalendarAccount, ctx.tenant_id, id=account_id, provider_id=provider_id
    )
    record(
        session,
        ctx,
        "calendar_account.delete",
        "calendar_account",
        account.id,
        diff={"provider_id": provider_id, "integration_id": account.integration_id},
    )
    session.delete(account)
    session.flush()


# --- connections ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    integration: Integration
    account_id: str | None
    calendar: str


def create_connection(
    db: Database,
    ctx: Ctx,
    vault: Vault,
    registry: IntegrationRegistry,
    provider_id: str,
    data: ConnectionCreate,
) -> tuple[CalendarConnection, EnqueuedJob]:
    check_purpose(data.import_busy, data.export_bookings, SWITCHES)
    with db.read() as session:
        get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
        integration = session.scalar(
            scoped_select(Integration, ctx.tenant_id).where(Integration.id == data.integration_id)
        )
        if integration is None:
            raise NotFoundError("No such integration.")
        if integration.connector not in CALENDAR_CONNECTORS:
            raise InvalidInputError.one(
                "integration_id", "not a calendar integration", "not_calendar"
            )
        if not integration.enabled:
            raise InvalidInputError.one("integration_id", "the integration is disabled")
        connector_for(integration, registry)
        account = None
        if integration.connector != "caldav":
            account = session.scalar(
                scoped_select(CalendarAccount, ctx.tenant_id).where(
                    CalendarAccount.integration_id == integration.id,
                    CalendarAccount.provider_id == provider_id,
                )
            )
            if account is None or account.status != "active":
                raise CalendarNotAuthorized(
                    "The provider has not authorized this calendar integration (or the "
                    "authorization was revoked): start an authorization first."
                )
            if data.export_bookings and not _can_write(account):
                raise InvalidInputError.one(
                    "export_bookings",
                    "the authorization is read-only: authorize again with export_bookings",
                    "read_only",
                )
    checked = _check_calendar(db, vault, integration, account, data.calendar)
    with db.write() as session:
        row = CalendarConnection(
            id=new_id("cal"),
            tenant_id=ctx.tenant_id,
            provider_id=provider_id,
            integration_id=integration.id,
            account_id=checked.account_id,
            connector=integration.connector,
            calendar=checked.calendar,
            import_busy=data.import_busy,
            export_bookings=data.export_bookings,
            status="active",
            sync_state={},
            has_push=False,
            consecutive_failures=0,
            last_changes=0,
            blocks=0,
            created_by=ctx.actor_id,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            raise ConnectionExists(
                "This calendar is already connected for this provider."
            ) from None
        record(
            session,
            ctx,
            "calendar_connection.create",
            "calendar_connection",
            row.id,
            diff={
                "provider_id": provider_id,
                "integration_id": integration.id,
                "import_busy": data.import_busy,
                "export_bookings": data.export_bookings,
            },
        )
        job = enqueue_sync(session, row, ctx.now, reason="created")
        if row.export_bookings:  # the provider's future bookings too, not only new ones
            queue_backfill(session, row, ctx.now)
        return row, job


def _can_write(account: CalendarAccount) -> bool:
    return any(s.endswith(("calendar.events", "Calendars.ReadWrite")) for s in account.scopes)


def _check_calendar(
    db: Database,
    vault: Vault,
    integration: Integration,
    account: CalendarAccount | None,
    calendar: str,
) -> _Checked:
    """One cheap outside call: the calendar exists and we may read it."""
    conn = context(db, vault, integration)
    if integration.connector == "caldav":
        with caldav.CalDavClient(conn) as client:
            url = client.same_origin(calendar)
            if not client.is_calendar(url):
                raise InvalidInputError.one(
                    "calendar", "no calendar collection at this URL", "not_calendar"
                )
        return _Checked(integration, None, url)
    assert account is not None
    tokens = TokenSource(db, vault)
    if integration.connector == "google_calendar":
        path, params = google.events_path(calendar), {"maxResults": 1}
    elif calendar == "primary":
        path, params = "/v1.0/me/calendar", {}
    else:
        path, params = f"/v1.0/me/calendars/{quote(calendar, safe='')}", {}
    with Authorized(conn, tokens, account.id) as calls:
        response = calls.request("GET", path, operation="calendar.get", params=params)
    if response.status_code in (403, 404):
        raise InvalidInputError.one(
            "calendar", "no such calendar, or the authorization cannot read it", "not_found"
        )
    if response.status_code != 200:
        raise InvalidInputError.one(
            "calendar", f"the provider answered HTTP {response.status_code}", "provider_error"
        )
    return _Checked(integration, account.id, calendar)


def discover_calendars(
    db: Database, ctx: Ctx, vault: Vault, integration_id: str
) -> list[caldav.CalendarInfo]:
    """The calendar collections a CalDAV integration's account can see (for ``calendar``).
    Google and Microsoft calendars are named by id: listing them would need a broader
    scope than the events of the practitioner's own calendars."""
    with db.read() as session:
        integration = session.scalar(
            scoped_select(Integration, ctx.tenant_id).where(Integration.id == integration_id)
        )
        if integration is None:
            raise NotFoundError("No such integration.")
        if integration.connector != "caldav":
            raise InvalidInputError.one(
                "integration_id", "only CalDAV integrations list their calendars", "not_caldav"
            )
        conn = context(db, vault, integration)
    with caldav.CalDavClient(conn) as client:
        return client.discover()


def list_connections(session: Session, ctx: Ctx, provider_id: str) -> list[CalendarConnection]:
    get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    stmt = scoped_select(CalendarConnection, ctx.tenant_id).where(
        CalendarConnection.provider_id == provider_id
    )
    return list(session.scalars(stmt.order_by(CalendarConnection.id)))


def get_connection(
    session: Session, ctx: Ctx, provider_id: str, connection_id: str
) -> CalendarConnection:
    return get_scoped(
        session, CalendarConnection, ctx.tenant_id, id=connection_id, provider_id=provider_id
    )


def delete_connection(session: Session, ctx: Ctx, provider_id: str, connection_id: str) -> int:
    """Remove the connection and its imported blocks; returns how many blocks went."""
    row = get_connection(session, ctx, provider_id, connection_id)
    removed = count(session, row.id)
    push.queue_stop(session, row, ctx.now)
    record(
        session,
        ctx,
        "calendar_connection.delete",
        "calendar_connection",
        row.id,
        diff={"provider_id": provider_id, "integration_id": row.integration_id, "blocks": removed},
    )
    session.delete(row)
    session.flush()
    return removed


def check_purpose(import_busy: bool, export_bookings: bool, fields: tuple[str, ...]) -> None:
    """A connection that neither imports nor exports does nothing: refuse it, naming
    ``fields`` (the switches the request turned off)."""
    if not import_busy and not export_bookings:
        message = "a connection must import busy time or export bookings (delete it instead)"
        raise InvalidInputError([FieldError(f, message, "nothing_to_do") for f in fields])


def update_connection(
    session: Session, ctx: Ctx, provider_id: str, connection_id: str, data: ConnectionUpdate
) -> CalendarConnection:
    """Switch import and export on or off; at least one must stay on.

    * ``import_busy`` off: the connection's imported blocks are deleted in this
      transaction (their slots are bookable again at once), its push channel or
      subscription is stopped (a job), its cursor and window are forgotten, and it is
      no longer polled, pushed to or synced (``sync_now`` refuses). A sync round running
      meanwhile writes nothing more (``blocks.write`` and ``sync`` check the switch).
    * ``import_busy`` on: a full sync is queued, as on creation; push starts again after
      it where the connector has push (``push.wanted``).
    * ``export_bookings`` on: the provider's future bookings are written too (a backfill
      job); off: new changes are no longer written; events already in the calendar stay
      (a cancel or move of an exported booking still updates them).
    """
    given = {f: v for f in SWITCHES if (v := getattr(data, f)) is not None}
    if not given:
        raise InvalidInputError(
            [
                FieldError(f, "give import_busy, export_bookings or both", "required")
                for f in SWITCHES
            ]
        )
    row = get_connection(session, ctx, provider_id, connection_id)
    # Locked: a sync round's block writes (which lock it too) wait for this or come first.
    session.refresh(row, with_for_update=True)
    changed = {f: v for f, v in given.items() if getattr(row, f) != v}
    if not changed:
        return row
    check_purpose(
        changed.get("import_busy", row.import_busy),
        changed.get("export_bookings", row.export_bookings),
        tuple(f for f, v in changed.items() if not v),
    )
    if changed.get("export_bookings") and row.account_id is not None:
        account = session.get(CalendarAccount, row.account_id)
        if account is None or not _can_write(account):
            raise InvalidInputError.one(
                "export_bookings",
                "the authorization is read-only: authorize again with export_bookings",
                "read_only",
            )
    before = {f: getattr(row, f) for f in changed}
    extra: dict[str, object] = {}
    if changed.get("import_busy") is False:
        extra["blocks_removed"] = _stop_import(session, row, ctx.now)
    for field, value in changed.items():
        setattr(row, field, value)
    row.updated_at = ctx.now
    diff = diff_of(before, changed) or {}
    record(
        session,
        ctx,
        "calendar_connection.update",
        "calendar_connection",
        row.id,
        diff={**diff, **extra},
    )
    if changed.get("import_busy"):
        enqueue_sync(session, row, ctx.now, reason="import_on")
    if changed.get("export_bookings"):
        queue_backfill(session, row, ctx.now)
    return row


def _stop_import(session: Session, row: CalendarConnection, now: datetime) -> int:
    """Everything import left behind; returns how many blocks went."""
    removed = delete_all(session, row.id)
    push.queue_stop(session, row, now)
    row.has_push = False
    row.push_id = row.push_resource = row.push_expires_at = None
    row.push_error = row.push_error_at = None
    # forgotten, so switching import on again starts with a full round
    row.sync_token, row.sync_state = None, {}
    row.window_start = row.window_end = None
    row.blocks, row.last_changes = 0, 0
    if row.status == "error":  # sync failures no longer matter; needs_reauth still does
        row.status = "active"
    row.consecutive_failures, row.last_error, row.last_error_at = 0, None, None
    for rule in (alerts.FAILING_RULE, alerts.UNVERIFIED_RULE):
        alerts.resolve(session, tenant_id=row.tenant_id, subject_id=row.id, now=now, rule=rule)
    return removed


def sync_now(session: Session, ctx: Ctx, provider_id: str, connection_id: str) -> EnqueuedJob:
    row = get_connection(session, ctx, provider_id, connection_id)
    if not row.import_busy:
        raise InvalidInputError.one("import_busy", "this connection imports nothing", "disabled")
    if row.status == "needs_reauth":
        raise CalendarNotAuthorized("The calendar authorization was revoked: authorize again.")
    record(session, ctx, "calendar_connection.sync", "calendar_connection", row.id)
    return enqueue_sync(session, row, ctx.now, reason="requested")


def to_out(row: CalendarConnection, now: datetime) -> ConnectionOut:
    lag = (now - row.last_success_at).total_seconds() if row.last_success_at else None
    return ConnectionOut(
        id=row.id,
        provider_id=row.provider_id,
        integration_id=row.integration_id,
        account_id=row.account_id,
        connector=row.connector,
        calendar=row.calendar,
        import_busy=row.import_busy,
        export_bookings=row.export_bookings,
        status=row.status,
        sync=SyncStatus(
            last_sync_at=row.last_sync_at,
            last_success_at=row.last_success_at,
            last_full_sync_at=row.last_full_sync_at,
            lag_seconds=None if lag is None else max(0.0, lag),
            last_error=row.last_error,
            last_error_at=row.last_error_at,
            consecutive_failures=row.consecutive_failures,
            last_changes=row.last_changes,
            blocks=row.blocks,
            push=row.has_push,
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
