"""``/api/v1/webhook-endpoints`` and ``/api/v1/webhook-deliveries``: outbound webhooks.

A clinic subscribes its own systems to ClinicBridge events; deliveries are signed
per Standard Webhooks and retried for about three days.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.api.vault_dep import vault_of
from clinicbridge.core.context import Ctx
from clinicbridge.webhooks import delivery as _delivery  # noqa: F401  (registers the job handler)
from clinicbridge.webhooks import endpoints, outbound
from clinicbridge.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt
from clinicbridge.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
)
from clinicbridge.webhooks.ssrf import AllowList

router = APIRouter(tags=["webhooks"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("webhooks:read")]
Manager = Annotated[Ctx, require("webhooks:manage")]
Status = Literal["pending", "retrying", "delivered", "dead", "cancelled"]
ENDPOINTS = "/webhook-endpoints"


def _allow(request: Request) -> AllowList:
    return AllowList.parse(request.app.state.settings.webhook_allowlist)


@router.get(ENDPOINTS, response_model=ListOut[EndpointOut])
def list_endpoints(db: DB, ctx: Reader, page: Paging) -> ListOut[EndpointOut]:
    with db.read() as session:
        result = endpoints.list_endpoints(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, EndpointOut.model_validate)


@router.post(ENDPOINTS, status_code=201, response_model=EndpointCreated)
def create_endpoint(
    body: EndpointCreate, request: Request, db: DB, ctx: Manager
) -> EndpointCreated:
    """Create an endpoint. The signing secret is in this answer only."""
    with db.write() as session:
        endpoint, secret = endpoints.create_endpoint(
            session, ctx, body, vault=vault_of(request), allow=_allow(request)
        )
        out = EndpointOut.model_validate(endpoint).model_dump()
    return EndpointCreated(**out, secret=secret.reveal())


@router.get(ENDPOINTS + "/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: str, db: DB, ctx: Reader) -> EndpointOut:
    with db.read() as session:
        return EndpointOut.model_validate(endpoints.get_endpoint(session, ctx, endpoint_id))


@router.patch(ENDPOINTS + "/{endpoint_id}", response_model=EndpointOut)
def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, request: Request, db: DB, ctx: Manager
) -> EndpointOut:
    """Change an endpoint; ``enabled: true`` on a disabled one clears its failures."""
    with db.write() as session:
        endpoint = endpoints.update_endpoint(session, ctx, endpoint_id, body, allow=_allow(request))
        return EndpointOut.model_validate(endpoint)


@router.delete(ENDPOINTS + "/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, db: DB, ctx: Manager) -> Response:
    with db.write() as session:
        endpoints.delete_endpoint(session, ctx, endpoint_id)
    return Response(status_code=204)


@router.post(ENDPOINTS + "/{endpoint_id}/test", status_code=202, response_model=DeliveryOut)
def test_endpoint(endpoint_id: str, db: DB, ctx: Manager) -> DeliveryOut:
    """Queue a ``webhook.test`` event for this endpoint only."""
    with db.write() as session:
        return _delivery_out(outbound.send_test(session, ctx, endpoint_id), [])


@router.get(ENDPOINTS + "/{endpoint_id}/deliveries", response_model=ListOut[DeliveryOut])
def list_deliveries(
    endpoint_id: str,
    db: DB,
    ctx: Reader,
    page: Paging,
    status: Annotated[Status | None, Query()] = None,
) -> ListOut[DeliveryOut]:
    """Deliveries to this endpoint, each with its attempts (status code, duration, time)."""
    with db.read() as session:
        result = outbound.list_deliveries(
            session,
            ctx,
            endpoint_id,
            status=status,
            limit=page.limit,
            starting_after=page.starting_after,
        )
        attempts = outbound.attempts_of(session, [d.id for d in result.items])
        return ListOut.of(result, lambda d: _delivery_out(d, attempts[d.id]))


@router.get("/webhook-deliveries/{delivery_id}", response_model=DeliveryOut)
def get_delivery(delivery_id: str, db: DB, ctx: Reader) -> DeliveryOut:
    with db.read() as session:
        found = outbound.get_delivery(session, ctx, delivery_id)
        return _delivery_out(found, outbound.attempts_of(session, [found.id])[found.id])


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut
)
def redeliver(delivery_id: str, db: DB, ctx: Manager) -> DeliveryOut:
    """Send again now, with the same ``webhook-id`` (receivers can deduplicate)."""
    with db.write() as session:
        found = outbound.redeliver(session, ctx, delivery_id)
        return _delivery_out(found, outbound.attempts_of(session, [found.id])[found.id])


def _delivery_out(
    found: WebhookDelivery, attempts: Sequence[WebhookDeliveryAttempt]
) -> DeliveryOut:
    out = DeliveryOut.model_validate(found)
    out.attempt_log = [AttemptOut.model_validate(a) for a in attempts]
    return out
