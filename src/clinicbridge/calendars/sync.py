"""The sync engine: one connection's outside calendar into its provider's busy blocks.

A sync runs as the job ``calendars.sync`` (dedupe key per connection, so at most one
waits or runs per connection at a time):

1. Read the connection, its provider's timezone and booking horizon (the longest
   ``max_advance_days`` of the services they give, 90 by default).
2. Choose the round: incremental from the stored cursor, or full when there is none,
   when the provider expired it (410: done again at once as a full round), or when the
   window no longer covers the booking horizon (the window is
   ``[now - 1 day, now + horizon + 30 days]``, renewed by a full round as time passes).
3. Ask the source (``google``, ``microsoft``, ``caldav``) for the changes, with no
   transaction open. Outside calls land in the call log (``OutboundClient``).
4. Plan and write the block changes in batches of 500, each in a short transaction.
5. Store the new cursor, the window and the status (last sync and success times,
   changes, block count, errors) in one last transaction: a round cut short anywhere
   is simply done again from the old cursor, and writing by key is idempotent.

Failures are recorded on the connection (``last_error``, ``consecutive_failures``,
status ``error``); retryable ones fail the job so it retries with backoff. A revoked
authorization sets ``needs_reauth`` and stops (no retry can help). The periodic task
``calendars.poll`` enqueues a sync every 5 minutes for every connection without push
(all CalDAV ones, and Google/Microsoft until push channels exist).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.calendars import alerts, blocks, caldav, google, microsoft
from clinicbridge.calendars.calls import Authorized
from clinicbridge.calendars.errors import ReauthorizationRequired, SyncTokenExpired
from clinicbridge.calendars.events import Changes, Window
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.runtime import context
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.queue import EnqueuedJob, NewJob, enqueue, enqueue_many
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.scheduling.models import Provider, Service, ServiceProvider
from clinicbridge.vault.service import Vault

log = logging.getLogger("clinicbridge.calendars")
SYNC_KIND = "calendars.sync"
POLL_KIND = "calendars.poll"
DEFAULT_HORIZON_DAYS = 90
WINDOW_BACK = timedelta(days=1)
WINDOW_AHEAD_MARGIN = timedelta(days=30)
SYNCABLE = ("active", "error")
MAX_ROUNDS_PER_JOB = 3


def dedupe_key(connection_id: str) -> str:
    return f"calendar-sync:{connection_id}"


def enqueue_sync(
    session: Session, connection: CalendarConnection, now: datetime, *, reason: str
) -> EnqueuedJob:
    """Queue a sync; one already waiting or running is returned instead (and a running
    one does another round, see ``run_sync``)."""
    connection.sync_requested_at = now
    return enqueue(
        session,
        SYNC_KIND,
        {"connection_id": connection.id, "reason": reason},
        now=now,
        tenant_id=connection.tenant_id,
        dedupe_key=dedupe_key(connection.id),
    )


@dataclass(frozen=True)
class SyncResult:
    status: str  # synced, skipped, needs_reauth, failed
    full: bool = False
    changes: int = 0
    blocks: int = 0


def horizon_days(session: Session, provider_id: str) -> int:
    longest = session.scalar(
        sa.select(sa.func.max(Service.max_advance_days))
        .join(ServiceProvider, ServiceProvider.service_id == Service.id)
        .where(ServiceProvider.provider_id == provider_id, Service.is_active.is_(True))
    )
    return int(longest or DEFAULT_HORIZON_DAYS)


@dataclass(frozen=True)
class _Round:
    connection: CalendarConnection
    integration: Integration
    window: Window
    full: bool
    self_emails: frozenset[str]


def sync_connection(
    db: Database, vault: Vault, connection_id: str, *, clock: Clock | None = None
) -> SyncResult:
    """One sync round of one connection (see the module docstring)."""
    clock = clock or SystemClock()
    started = clock.now()
    prepared = _prepare(db, connection_id, started)
    if prepared is None:
        return SyncResult("skipped")
    try:
        changes = _fetch(db, vault, prepared, clock)
    except SyncTokenExpired:
        log.info(
            "calendar sync cursor expired: full resync", extra={"fields": {"id": connection_id}}
        )
        prepared = _Round(**{**prepared.__dict__, "full": True})
        try:
            changes = _fetch(db, vault, prepared, clock)
        except ExternalServiceError as exc:
            return _failed(db, connection_id, exc, clock.now())
    except ExternalServiceError as exc:
        return _failed(db, connection_id, exc, clock.now())
    connection = prepared.connection
    with db.read() as session:
        existing = blocks.stored(session, connection.id, changes)
    planned = blocks.plan(existing, changes, prepared.window)
    reason = f"busy in {connection.connector.replace('_', ' ')}"
    written = blocks.write(db, connection, planned, clock.now(), reason=reason)
    return _succeeded(db, prepared, changes, written, started, clock.now())


def _prepare(db: Database, connection_id: str, now: datetime) -> _Round | None:
    with db.read() as session:
        connection = session.get(CalendarConnection, connection_id)
        if connection is None or not connection.import_busy:
            return None
        if connection.status not in SYNCABLE:
            return None
        integration = session.get(Integration, connection.integration_id)
        provider = session.get(Provider, connection.provider_id)
        if integration is None or provider is None or not integration.enabled:
            return None
        horizon = timedelta(days=horizon_days(session, provider.id))
        needed_end = now + horizon
        renew = connection.window_end is None or connection.window_end < needed_end
        has_cursor = connection.sync_token is not None or bool(connection.sync_state.get("etags"))
        full = renew or connection.window_start is None or not has_cursor
        if full:
            window = Window(now - WINDOW_BACK, needed_end + WINDOW_AHEAD_MARGIN, provider.timezone)
        else:
            assert connection.window_start is not None and connection.window_end is not None
            window = Window(connection.window_start, connection.window_end, provider.timezone)
        emails = {provider.email.lower()} if provider.email else set()
        return _Round(connection, integration, window, full, frozenset(emails))


def _fetch(db: Database, vault: Vault, job: _Round, clock: Clock) -> Changes:
    conn = context(db, vault, job.integration)
    connection = job.connection
    cursor = None if job.full else connection.sync_token
    if connection.connector == "caldav":
        state = {} if job.full else dict(connection.sync_state)
        emails = job.self_emails
        username = conn.secret("username")
        if "@" in username:
            emails = emails | {username.lower()}
        with caldav.CalDavClient(conn) as client:
            changes = client.fetch(connection.calendar, cursor, state, job.window, emails)
        changes.full = changes.full or job.full
        return changes
    if connection.account_id is None:
        raise ReauthorizationRequired(
            "no calendar authorization for this connection",
            integration=connection.integration_id,
            oauth_error=None,
        )
    tokens = TokenSource(db, vault, clock=clock)
    with Authorized(conn, tokens, connection.account_id) as calls:
        if connection.connector == "google_calendar":
            return google.fetch(calls, connection.calendar, cursor, job.window)
        return microsoft.fetch(calls, connection.calendar, cursor, job.window)


def _succeeded(
    db: Database,
    job: _Round,
    changes: Changes,
    written: int,
    started: datetime,
    now: datetime,
) -> SyncResult:
    with db.write() as session:
        connection = session.get(CalendarConnection, job.connection.id, with_for_update=True)
        if connection is None or not connection.import_busy:
            # deleted, or import switched off during the round: store no cursor (switching
            # import off forgot it and the window, so the next round is a full one)
            return SyncResult("skipped")
        if changes.full:
            connection.window_start, connection.window_end = job.window.start, job.window.end
            connection.last_full_sync_at = now
        if connection.connector == "caldav":
            connection.sync_state = changes.state or {}
        connection.sync_token = changes.cursor
        connection.status = "active" if connection.status in SYNCABLE else connection.status
        connection.last_sync_at, connection.last_success_at = started, started
        connection.last_error, connection.last_error_at = None, None
        alerts.resolve(
            session, tenant_id=connection.tenant_id, subject_id=connection.id, now=now,
            rule=alerts.UNVERIFIED_RULE,
        )  # fmt: skip
        if connection.consecutive_failures >= alerts.FAILING_AFTER:
            alerts.resolve(
                session, tenant_id=connection.tenant_id, subject_id=connection.id, now=now,
                rule=alerts.FAILING_RULE,
            )  # fmt: skip
        connection.consecutive_failures, connection.last_changes = 0, written
        connection.blocks = blocks.count(session, connection.id)
        connection.updated_at = now
        return SyncResult("synced", changes.full, written, connection.blocks)


def _failed(
    db: Database, connection_id: str, exc: ExternalServiceError, now: datetime
) -> SyncResult:
    revoked = isinstance(exc, ReauthorizationRequired)
    with db.write() as session:
        connection = session.get(CalendarConnection, connection_id, with_for_update=True)
        if connection is not None:
            connection.last_sync_at, connection.updated_at = now, now
            connection.last_error, connection.last_error_at = exc.detail[:500], now
            connection.consecutive_failures += 1
            connection.status = "needs_reauth" if revoked else "error"
            if not revoked and connection.consecutive_failures >= alerts.FAILING_AFTER:
                alerts.open_alert(
                    session,
                    tenant_id=connection.tenant_id,
                    subject_type=alerts.FAILING_SUBJECT,
                    subject_id=connection.id,
                    rule=alerts.FAILING_RULE,
                    details={
                        "provider_id": connection.provider_id,
                        "integration_id": connection.integration_id,
                        "consecutive_failures": connection.consecutive_failures,
                        "last_error": connection.last_error,
                    },
                    now=now,
                )
    if revoked:
        return SyncResult("needs_reauth")
    if exc.retryable:
        raise exc  # the job retries with backoff (an open breaker does not spend an attempt)
    return SyncResult("failed")


def sync_until_current(
    db: Database,
    vault: Vault,
    connection_id: str,
    *,
    clock: Clock | None = None,
    job_id: str | None = None,
) -> SyncResult:
    """Sync rounds until no sync was asked for during the last one (at most
    ``MAX_ROUNDS_PER_JOB``): a change notified while a round ran is never left waiting
    for the next poll, and there is still one job at a time per connection.

    The job (``job_id``) gives up its dedupe key in the same transaction that finds no
    new request: a request before that commit is seen here (another round), one after it
    queues a new job, even while the worker is still recording this one's outcome."""
    clock = clock or SystemClock()
    result = SyncResult("skipped")
    for _ in range(MAX_ROUNDS_PER_JOB):
        started = clock.now()
        result = sync_connection(db, vault, connection_id, clock=clock)
        if result.status != "synced" or not _asked_again(db, connection_id, started, job_id):
            return result
    return result


def _asked_again(db: Database, connection_id: str, since: datetime, job_id: str | None) -> bool:
    with db.write() as session:
        requested = session.scalar(
            sa.select(CalendarConnection.sync_requested_at)
            .where(CalendarConnection.id == connection_id)
            .with_for_update()
        )
        if requested is not None and requested >= since:
            return True
        if job_id is not None:
            session.execute(sa.update(Job).where(Job.id == job_id).values(dedupe_key=None))
        return False


def connections_to_poll(session: Session, now: datetime) -> list[tuple[str, str]]:
    """Connections without push, or whose push ran out without being renewed."""
    rows = session.execute(
        sa.select(CalendarConnection.id, CalendarConnection.tenant_id).where(
            CalendarConnection.import_busy.is_(True),
            CalendarConnection.status.in_(SYNCABLE),
            sa.or_(
                CalendarConnection.has_push.is_(False),
                CalendarConnection.push_expires_at.is_(None),
                CalendarConnection.push_expires_at < now,
            ),
        )
    )
    return [(r.id, r.tenant_id) for r in rows]


# One attempt: the next tick, five minutes later, is the retry.
@registry.handler(POLL_KIND, max_attempts=1)
def poll(job: JobContext) -> None:
    now = job.now()
    with job.db.write() as session:
        due = connections_to_poll(session, now)
        for chunk in range(0, len(due), 500):
            ids = [cid for cid, _ in due[chunk : chunk + 500]]
            session.execute(
                sa.update(CalendarConnection)
                .where(CalendarConnection.id.in_(ids))
                .values(sync_requested_at=now)
            )
        enqueue_many(
            session,
            (
                NewJob(
                    SYNC_KIND,
                    {"connection_id": cid, "reason": "poll"},
                    tenant_id=tenant_id,
                    dedupe_key=dedupe_key(cid),
                )
                for cid, tenant_id in due
            ),
            now=now,
        )


registry.periodic(PeriodicTask(POLL_KIND, "*/5 * * * *", POLL_KIND))
