"""Push: Google watch channels and Microsoft Graph subscriptions, each change → a sync.

* Start: after a connection's first successful sync (Google wants the sync token
  first), when its integration has a webhook secret: Google ``events.watch`` (a channel
  to ``CLINICBRIDGE_BASE_URL/webhooks/{integration_id}`` with the secret as its token,
  7 days), Graph ``POST /subscriptions`` (``clientState`` = the secret, 3 days; Graph
  validates the URL first, answered by the inbox). The connection then has ``push``
  and the 5-minute poll leaves it alone.
* Notifications arrive through the verified inbox (``webhooks.verifiers``); the
  handler registered here finds the connection by channel / subscription id and queues
  its sync (folded into a waiting or running one, see ``sync.run_sync``).
* Renewal: every hour, channels ending within a day are replaced (Google channels
  cannot be extended: a new one starts, then the old one is stopped) and subscriptions
  extended (``PATCH``). A push that could not be started or renewed, or that ran out,
  leaves the connection polled, and the failure is shown in ``push_error``.
* Stop: deleting a connection queues ``calendars.push_stop`` with what the provider
  needs to stop it (``channels.stop`` / ``DELETE /subscriptions/{id}``).

The providers only call https URLs; ``CLINICBRIDGE_BASE_URL`` must be the public one.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.calendars import google
from clinicbridge.calendars.calls import Authorized, json_of, refused
from clinicbridge.calendars.events import parse_instant
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.runtime import context
from clinicbridge.calendars.sync import SYNCABLE, enqueue_sync
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault

log = logging.getLogger("clinicbridge.calendars")
PUSH_CONNECTORS = ("google_calendar", "microsoft_calendar")
GOOGLE_TTL = timedelta(days=7)
GRAPH_TTL = timedelta(minutes=4230)  # Graph's limit for Outlook events is 10,080 minutes
RENEW_AHEAD = timedelta(hours=24)
RETRY_AFTER_FAILURE = timedelta(hours=1)
RENEW_KIND, STOP_KIND = "calendars.push_renew", "calendars.push_stop"


def webhook_url(base_url: str, integration_id: str) -> str:
    return f"{base_url.rstrip('/')}/webhooks/{integration_id}"


def wanted(connection: CalendarConnection, integration: Integration, now: datetime) -> bool:
    """Should this connection have push started now?"""
    if connection.connector not in PUSH_CONNECTORS or not connection.import_busy:
        return False
    if "webhook_secret" not in integration.credentials or connection.account_id is None:
        return False
    if (
        connection.push_error_at is not None
        and connection.push_error_at > now - RETRY_AFTER_FAILURE
    ):
        return False
    return not connection.has_push or _ends_soon(connection, now)


def _ends_soon(connection: CalendarConnection, now: datetime) -> bool:
    return connection.push_expires_at is None or connection.push_expires_at < now + RENEW_AHEAD


def ensure_push(
    db: Database,
    vault: Vault,
    connection_id: str,
    base_url: str,
    *,
    clock: Clock | None = None,
) -> bool:
    """Start or renew push for one connection; True when it has push afterwards."""
    clock = clock or SystemClock()
    now = clock.now()
    with db.read() as session:
        connection = session.get(CalendarConnection, connection_id)
        integration = session.get(Integration, connection.integration_id) if connection else None
        if connection is None or integration is None or not integration.enabled:
            return False
        if not wanted(connection, integration, now):
            return connection.has_push
        conn = context(db, vault, integration)
    secret = conn.secret("webhook_secret")
    assert connection.account_id is not None
    old = (connection.push_id, connection.push_resource) if connection.has_push else None
    try:
        with Authorized(conn, TokenSource(db, vault, clock=clock), connection.account_id) as calls:
            if connection.connector == "google_calendar":
                push_id, resource, expires = _google_watch(calls, connection, secret, base_url, now)
            elif old is not None and old[0]:
                push_id, resource, expires = _graph_renew(calls, old[0], now)
            else:
                push_id, resource, expires = _graph_subscribe(
                    calls, connection, secret, base_url, now
                )
    except ExternalServiceError as exc:
        _record(db, connection_id, now, error=exc.detail)
        return False
    _record(db, connection_id, now, push=(push_id, resource, expires))
    if connection.connector == "google_calendar" and old is not None and old[0] and old[1]:
        _queue_stop(db, connection, old[0], old[1], now)  # the channel it replaces
    return True


def _google_watch(
    calls: Authorized, connection: CalendarConnection, secret: str, base_url: str, now: datetime
) -> tuple[str, str, datetime]:
    body = {
        "id": str(uuid.uuid4()),
        "type": "web_hook",
        "address": webhook_url(base_url, connection.integration_id),
        "token": secret,
        "params": {"ttl": str(int(GOOGLE_TTL.total_seconds()))},
    }
    path = google.events_path(connection.calendar) + "/watch"
    response = calls.request("POST", path, operation="calendar.events.watch", json=body)
    if response.status_code != 200:
        raise refused(calls.integration, "calendar.events.watch", response)
    channel = json_of(response)
    expiration = channel.get("expiration")
    expires = (
        datetime.fromtimestamp(int(expiration) / 1000, tz=UTC)
        if isinstance(expiration, str) and expiration.isdigit()
        else now + GOOGLE_TTL
    )
    return str(channel.get("id") or body["id"]), str(channel.get("resourceId") or ""), expires


def _graph_resource(calendar: str) -> str:
    if calendar in ("", "primary"):
        return "me/events"
    return f"me/calendars/{quote(calendar, safe='')}/events"


def _graph_subscribe(
    calls: Authorized, connection: CalendarConnection, secret: str, base_url: str, now: datetime
) -> tuple[str, str, datetime]:
    expires = now + GRAPH_TTL
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": webhook_url(base_url, connection.integration_id),
        "resource": _graph_resource(connection.calendar),
        "expirationDateTime": _graph_time(expires),
        "clientState": secret,
    }
    response = calls.request(
        "POST", "/v1.0/subscriptions", operation="subscriptions.create", json=body
    )
    if response.status_code != 201:
        raise refused(calls.integration, "subscriptions.create", response)
    created = json_of(response)
    return str(created["id"]), "", _parse_graph_time(created.get("expirationDateTime"), expires)


def _graph_renew(calls: Authorized, sub_id: str, now: datetime) -> tuple[str, str, datetime]:
    expires = now + GRAPH_TTL
    response = calls.request(
        "PATCH",
        f"/v1.0/subscriptions/{quote(sub_id, safe='')}",
        operation="subscriptions.renew",
        json={"expirationDateTime": _graph_time(expires)},
    )
    if response.status_code != 200:
        raise refused(calls.integration, "subscriptions.renew", response)
    return sub_id, "", _parse_graph_time(json_of(response).get("expirationDateTime"), expires)


def _graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse_graph_time(value: Any, default: datetime) -> datetime:
    if not isinstance(value, str):
        return default
    try:
        return parse_instant(value)
    except ValueError:
        return default


def _record(
    db: Database,
    connection_id: str,
    now: datetime,
    *,
    push: tuple[str, str, datetime] | None = None,
    error: str | None = None,
) -> None:
    with db.write() as session:
        row = session.get(CalendarConnection, connection_id, with_for_update=True)
        if row is None:
            return
        if push is not None:
            row.has_push, (row.push_id, row.push_resource, row.push_expires_at) = True, push
            row.push_error = row.push_error_at = None
        else:
            row.push_error, row.push_error_at = (error or "")[:500], now
            if row.push_expires_at is None or row.push_expires_at <= now:
                row.has_push = False  # polled again
        row.updated_at = now


def _queue_stop(
    db: Database, connection: CalendarConnection, push_id: str, resource: str, now: datetime
) -> None:
    with db.write() as session:
        queue_stop(session, connection, now, push_id=push_id, resource=resource)


def queue_stop(
    session: Session,
    connection: CalendarConnection,
    now: datetime,
    *,
    push_id: str | None = None,
    resource: str | None = None,
) -> None:
    """Stop a channel or subscription later, in a job (also after the connection is gone)."""
    push_id = push_id or connection.push_id
    if not push_id:
        return
    enqueue(
        session,
        STOP_KIND,
        {
            "integration_id": connection.integration_id,
            "account_id": connection.account_id,
            "connector": connection.connector,
            "push_id": push_id,
            "resource": resource if resource is not None else connection.push_resource,
        },
        now=now,
        tenant_id=connection.tenant_id,
        max_attempts=5,
    )


def _vault(job: JobContext) -> Vault:
    if job.settings is None:
        raise RuntimeError("calendar push jobs need the service settings (master key file)")
    return shared_vault(job.db, job.settings.master_key_file)


@registry.handler(STOP_KIND, max_attempts=5)
def stop(job: JobContext) -> None:
    payload = job.payload
    vault = _vault(job)
    with job.db.read() as session:
        integration = session.get(Integration, payload["integration_id"])
        if integration is None or not payload.get("account_id"):
            return  # the app or the grant is gone: the channel dies with its expiry
        conn = context(job.db, vault, integration)
    try:
        with Authorized(conn, TokenSource(job.db, vault), payload["account_id"]) as calls:
            if payload["connector"] == "google_calendar":
                body = {"id": payload["push_id"], "resourceId": payload["resource"]}
                response = calls.request(
                    "POST",
                    "/calendar/v3/channels/stop",
                    operation="calendar.channels.stop",
                    json=body,
                )
            else:
                path = f"/v1.0/subscriptions/{quote(str(payload['push_id']), safe='')}"
                response = calls.request("DELETE", path, operation="subscriptions.delete")
    except ExternalServiceError as exc:
        if exc.retryable:
            raise
        return  # the grant was revoked or removed: nothing left to stop with
    if response.status_code not in (200, 204, 404):
        raise refused(conn.integration_id, "push.stop", response)


@registry.handler(RENEW_KIND, max_attempts=1)
def renew(job: JobContext) -> None:
    """Start or renew push where it is due (the next tick is the retry)."""
    if job.settings is None:
        raise RuntimeError("push renewal needs the service settings (base URL)")
    now = job.now()
    with job.db.read() as session:
        due = session.scalars(
            sa.select(CalendarConnection.id).where(
                CalendarConnection.connector.in_(PUSH_CONNECTORS),
                CalendarConnection.import_busy.is_(True),
                CalendarConnection.status.in_(SYNCABLE),
                CalendarConnection.last_success_at.is_not(None),
                sa.or_(
                    CalendarConnection.has_push.is_(False),
                    CalendarConnection.push_expires_at < now + RENEW_AHEAD,
                ),
            )
        ).all()
    vault = _vault(job)
    for connection_id in due:
        try:
            ensure_push(job.db, vault, connection_id, job.settings.public_base_url)
        except Exception:  # one connection's failure must not stop the others' renewal
            log.exception("push renewal failed", extra={"fields": {"connection_id": connection_id}})


registry.periodic(PeriodicTask(RENEW_KIND, "17 * * * *", RENEW_KIND))


def _on_change(event: StoredEvent, job: JobContext) -> None:
    """A channel or subscription said the calendar changed: sync it (idempotent: a
    replayed notification only queues a sync that is folded into any waiting one)."""
    push_id = event.payload.get("channel_id") or event.payload.get("subscription_id")
    if not isinstance(push_id, str) or not push_id:
        return
    if event.payload.get("resource_state") == "sync":
        return  # Google's hello when a channel starts: nothing changed
    with job.db.write() as session:
        row = session.scalar(
            sa.select(CalendarConnection).where(
                CalendarConnection.tenant_id == event.tenant_id,
                CalendarConnection.integration_id == event.integration_id,
                CalendarConnection.push_id == push_id,
            )
        )
        if row is None or row.status not in SYNCABLE or not row.import_busy:
            return  # an old channel, or a connection since removed: nothing to do
        enqueue_sync(session, row, job.now(), reason="push")


integrations.on("google_calendar", "calendar.changed")(_on_change)
integrations.on("microsoft_calendar", "calendar.changed")(_on_change)
