"""Outbound webhooks: publish ClinicBridge events to the clinic's subscribed endpoints.

``publish`` runs in the caller's transaction: the business write, one delivery per
subscribed endpoint and one ``webhooks.deliver`` job per delivery commit together,
or not at all. The job (``webhooks.delivery``) signs and sends it, retrying for
about three days. A message follows Standard Webhooks::

    {"type": "booking.created", "timestamp": "2026-01-05T09:00:00Z", "data": {...}}

Subscriptions are exact types (``booking.created``), prefixes (``booking.*``) or ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record
from clinicbridge.audit.diff import jsonable
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.jobs import queue
from clinicbridge.webhooks.endpoints import get_endpoint
from clinicbridge.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint

KIND = "webhooks.deliver"
TEST_EVENT = "webhook.test"
# With the queue's default backoff (2 min doubling, full jitter) the caps of
# 12 attempts add up to about three days.
MAX_ATTEMPTS = queue.DEFAULT_MAX_ATTEMPTS
STATUSES = ("pending", "retrying", "delivered", "dead", "cancelled")


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether a subscription (exact, ``prefix.*`` or ``*``) covers ``event_type``."""
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def message(event_type: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The Standard Webhooks body; ``data`` is made JSON-native (times as ISO 8601)."""
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"type": event_type, "timestamp": stamp, "data": jsonable(data)}


def publish(
    session: Session,
    *,
    tenant_id: str,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
) -> int:
    """Queue ``event_type`` for every enabled endpoint subscribed to it; returns how many."""
    # Every booking change publishes: read only ids and subscriptions, most clinics
    # subscribe to few types, and load the endpoints that match.
    subscribed = session.execute(_SUBSCRIPTIONS, {"tenant_id": tenant_id})
    wanted = [eid for eid, types in subscribed if matches(types, event_type)]
    if not wanted:
        return 0
    targets = session.scalars(
        scoped_select(WebhookEndpoint, tenant_id)
        .where(WebhookEndpoint.id.in_(wanted))
        .order_by(WebhookEndpoint.id)
    ).all()
    return len(_deliver(session, tenant_id, targets, event_type, data, now))


_SUBSCRIPTIONS = sa.select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
    WebhookEndpoint.tenant_id == sa.bindparam("tenant_id"), WebhookEndpoint.enabled.is_(True)
)


def _deliver(
    session: Session,
    tenant_id: str,
    endpoints: Sequence[WebhookEndpoint],
    event_type: str,
    data: dict[str, Any],
    now: datetime,
) -> list[WebhookDelivery]:
    if not endpoints:
        return []
    body = message(event_type, data, now)
    msg_id = new_id("msg")  # one message, the same webhook-id at every endpoint
    deliveries = [
        WebhookDelivery(
            id=new_id("whd"),
            tenant_id=tenant_id,
            endpoint_id=endpoint.id,
            message_id=msg_id,
            event_type=event_type,
            payload=body,
            status="pending",
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    session.flush()
    jobs = [_job(d) for d in deliveries]
    queue.enqueue_many(session, jobs, now=now)
    return deliveries


def _job(delivery: WebhookDelivery) -> queue.NewJob:
    return queue.NewJob(
        KIND,
        {"delivery_id": delivery.id},
        tenant_id=delivery.tenant_id,
        dedupe_key=delivery.id,
        max_attempts=MAX_ATTEMPTS,
    )


def send_test(session: Session, ctx: Ctx, endpoint_id: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event for this endpoint only, subscribed to it or not."""
    endpoint = get_endpoint(session, ctx, endpoint_id)
    if not endpoint.enabled:
        raise ConflictError("This endpoint is disabled; enable it first.")
    data = {"endpoint_id": endpoint.id, "message": "A test event from ClinicBridge."}
    (delivery,) = _deliver(session, ctx.tenant_id, [endpoint], TEST_EVENT, data, ctx.now)
    record(session, ctx, "webhook_endpoint.test", "webhook_endpoint", endpoint.id)
    return delivery


def redeliver(session: Session, ctx: Ctx, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same webhook-id and a fresh attempt budget."""
    delivery = get_delivery(session, ctx, delivery_id)
    endpoint = get_endpoint(session, ctx, delivery.endpoint_id)
    if not endpoint.enabled:
        raise ConflictError("This delivery's endpoint is disabled; enable it first.")
    job = queue.enqueue(
        session,
        KIND,
        {"delivery_id": delivery.id},
        now=ctx.now,
        tenant_id=ctx.tenant_id,
        dedupe_key=delivery.id,
        max_attempts=MAX_ATTEMPTS,
    )
    if not job.created and queue.get_job(session, job.id).state == "failed":
        queue.retry_job(session, job.id, ctx.now)  # waiting for its backoff: now instead
    delivery.status, delivery.updated_at = "pending", ctx.now
    session.flush()
    record(session, ctx, "webhook_delivery.redeliver", "webhook_delivery", delivery.id)
    return delivery


def get_delivery(session: Session, ctx: Ctx, delivery_id: str) -> WebhookDelivery:
    return get_scoped(session, WebhookDelivery, ctx.tenant_id, id=delivery_id)


def list_deliveries(
    session: Session,
    ctx: Ctx,
    endpoint_id: str,
    *,
    status: str | None = None,
    limit: int,
    starting_after: str | None,
) -> Page[WebhookDelivery]:
    endpoint = get_endpoint(session, ctx, endpoint_id)  # 404 for another clinic's
    stmt = scoped_select(WebhookDelivery, ctx.tenant_id).where(
        WebhookDelivery.endpoint_id == endpoint.id
    )
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return paginate(session, stmt, WebhookDelivery.id, limit, starting_after)


def attempts_of(
    session: Session, delivery_ids: Sequence[str]
) -> dict[str, list[WebhookDeliveryAttempt]]:
    """Attempts of several deliveries (one query), oldest first."""
    out: dict[str, list[WebhookDeliveryAttempt]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return out
    rows = session.scalars(
        sa.select(WebhookDeliveryAttempt)
        .where(WebhookDeliveryAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookDeliveryAttempt.attempted_at, WebhookDeliveryAttempt.id)
    )
    for row in rows:
        out[row.delivery_id].append(row)
    return out
