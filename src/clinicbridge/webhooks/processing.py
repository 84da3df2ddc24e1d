"""Processing stored inbound events in jobs: dispatch to the handlers domains registered.

Handlers are idempotent, so retries and replays never double-apply. An event
with no handler is marked ``ignored``; a handler failure marks it ``failed``
and the job retries with backoff until it is ``dead`` (error kept, visible in
the API and the CLI, replayable).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.models import Tenant
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.jobs.worker import describe
from clinicbridge.webhooks.inbox import PROCESS_KIND
from clinicbridge.webhooks.models import WebhookEvent

PURGE_KIND = "webhooks.purge_bodies"


_EVENTS = cast(sa.Table, WebhookEvent.__table__)
_INTEGRATIONS = cast(sa.Table, Integration.__table__)
# Built once: every inbound event is read and settled through these.
_LOAD = (
    sa.select(
        _EVENTS.c.tenant_id,
        _EVENTS.c.integration_id,
        _INTEGRATIONS.c.connector,
        _EVENTS.c.provider_event_id,
        _EVENTS.c.type,
        _EVENTS.c.payload,
    )
    .join(_INTEGRATIONS, _INTEGRATIONS.c.id == _EVENTS.c.integration_id)
    .where(_EVENTS.c.id == sa.bindparam("b_id"))
)
_SETTLE = (
    sa.update(_EVENTS)
    .where(_EVENTS.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        attempts=_EVENTS.c.attempts + 1,
        job_id=sa.bindparam("b_job"),
        last_error=sa.bindparam("b_error"),
        # a failure keeps the time of an earlier success (a replay that failed)
        processed_at=sa.func.coalesce(
            sa.bindparam("b_at", type_=_EVENTS.c.processed_at.type), _EVENTS.c.processed_at
        ),
    )
)


def _settle(job: JobContext, event_id: str, status: str, error: str | None) -> None:
    at = job.now() if status in ("processed", "ignored") else None
    with job.db.write() as session:
        session.connection().execute(
            _SETTLE,
            {"b_id": event_id, "b_status": status, "b_job": job.job_id, "b_error": error,
             "b_at": at},
        )  # fmt: skip


@registry.handler(PROCESS_KIND)
def process(job: JobContext) -> None:
    """Read the stored event (no lock), run its handlers (each writes in its own
    transaction), then record the outcome and the attempt in one statement."""
    event_id = str(job.payload["event_id"])
    with job.db.engine.connect() as conn:
        row = conn.execute(_LOAD, {"b_id": event_id}).first()
    if row is None:  # the integration (and its events) was deleted meanwhile
        return
    stored = StoredEvent(
        event_id,
        row.tenant_id,
        row.integration_id,
        row.connector,
        row.provider_event_id,
        row.type,
        dict(row.payload),
    )
    handlers = integrations.handlers_for(row.connector, stored.type)
    try:
        for handler in handlers:
            handler(stored, job)
    except Exception as exc:
        final = job.attempt >= job.max_attempts or not getattr(exc, "retryable", True)
        _settle(job, event_id, "dead" if final else "failed", describe(exc))
        raise
    _settle(job, event_id, "processed" if handlers else "ignored", None)


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
