"""Processing stored inbound events in jobs: dispatch to the handlers domains registered.

Handlers are idempotent, so retries and replays never double-apply. An event
with no handler is marked ``ignored``; a handler failure marks it ``failed``
and the job retries with backoff until it is ``dead`` (error kept, visible in
the API and the CLI, replayable).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.jobs.worker import describe
from clinicbridge.webhooks.inbox import PROCESS_KIND
from clinicbridge.webhooks.models import WebhookEvent

PURGE_KIND = "webhooks.purge_bodies"


def _set(db: Database, event_id: str, **values: object) -> None:
    with db.write() as session:
        session.execute(sa.update(WebhookEvent).where(WebhookEvent.id == event_id).values(**values))


@registry.handler(PROCESS_KIND)
def process(job: JobContext) -> None:
    event_id = str(job.payload["event_id"])
    with job.db.write() as session:
        row = session.execute(
            sa.select(WebhookEvent, Integration.connector)
            .join(Integration, Integration.id == WebhookEvent.integration_id)
            .where(WebhookEvent.id == event_id)
        ).first()
        if row is None:  # the integration (and its events) was deleted meanwhile
            return
        event, connector = row
        event.status, event.attempts, event.job_id = "processing", event.attempts + 1, job.job_id
        stored = StoredEvent(
            event.id,
            event.tenant_id,
            event.integration_id,
            connector,
            event.provider_event_id,
            event.type,
            dict(event.payload),
        )
    handlers = integrations.handlers_for(connector, stored.type)
    try:
        for handler in handlers:
            handler(stored, job)
    except Exception as exc:
        final = job.attempt >= job.max_attempts or not getattr(exc, "retryable", True)
        _set(job.db, event_id, status="dead" if final else "failed", last_error=describe(exc))
        raise
    _set(
        job.db,
        event_id,
        status="processed" if handlers else "ignored",
        last_error=None,
        processed_at=job.now(),
    )


def replay(session: Session, tenant_id: str, event_id: str, now: datetime) -> WebhookEvent:
    """Run an event's processing again (its handlers are idempotent)."""
    event = session.scalar(
        sa.select(WebhookEvent).where(
            WebhookEvent.id == event_id, WebhookEvent.tenant_id == tenant_id
        )
    )
    if event is None:
        raise NotFoundError("No such webhook event.")
    event.status, event.last_error = "received", None
    enqueue(
        session,
        PROCESS_KIND,
        {"event_id": event.id},
        now=now,
        tenant_id=tenant_id,
        dedupe_key=f"whe:{event.id}",
    )
    session.flush()
    return event


@registry.handler(PURGE_KIND)
def purge_bodies(job: JobContext) -> None:
    """Drop raw bodies past each clinic's retention; the normalized events stay."""
    now = job.now()
    with job.db.write() as session:
        for tenant_id, days in session.execute(
            sa.select(Tenant.id, Tenant.webhook_body_retention_days)
        ).all():
            session.execute(
                sa.update(WebhookEvent)
                .where(
                    WebhookEvent.tenant_id == tenant_id,
                    WebhookEvent.raw_body.is_not(None),
                    WebhookEvent.received_at < now - timedelta(days=days),
                )
                .values(raw_body=None)
            )


registry.periodic(PeriodicTask(PURGE_KIND, "17 * * * *", PURGE_KIND))
