"""``/api/v1/patients/{id}/push-subscriptions``: the browsers and apps of a patient that
receive web push messages, registered by the clinic's patient-facing app with what
``pushManager.subscribe()`` returned."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.messaging import push
from clinicbridge.messaging.push_models import PushSubscription
from clinicbridge.settings import Settings
from clinicbridge.webhooks.ssrf import AllowList

router = APIRouter(tags=["messages"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("patients:read")]
Writer = Annotated[Ctx, require("patients:write")]
PatientId = Annotated[str, Path(max_length=64)]
ALL = "/patients/{patient_id}/push-subscriptions"


class Keys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: Annotated[str, Field(min_length=80, max_length=100)]
    auth: Annotated[str, Field(min_length=16, max_length=32)]


class SubscriptionIn(BaseModel):
    """The browser's ``PushSubscription.toJSON()``."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Annotated[str, Field(min_length=10, max_length=2048)]
    expirationTime: Annotated[int | None, Field(ge=0)] = None
    keys: Keys


class SubscriptionOut(BaseModel):
    id: str
    patient_id: str
    origin: str = Field(description="the push service; the endpoint itself is not shown")
    expires_at: datetime | None
    expired_at: datetime | None
    last_success_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _out(row: PushSubscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=row.id,
        patient_id=row.patient_id,
        origin=push.origin(row.endpoint),
        expires_at=row.expires_at,
        expired_at=row.expired_at,
        last_success_at=row.last_success_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post(ALL, status_code=201, response_model=SubscriptionOut)
def subscribe(
    patient_id: PatientId, body: SubscriptionIn, request: Request, db: DB, ctx: Writer
) -> SubscriptionOut:
    """Register a subscription (the same endpoint again is updated, and may move to this
    patient). The endpoint must be https and reach a public address."""
    settings: Settings = request.app.state.settings
    expires = (
        datetime.fromtimestamp(body.expirationTime / 1000, UTC)
        if body.expirationTime is not None
        else None
    )
    with db.write() as session:
        row = push.subscribe(
            session,
            ctx,
            patient_id,
            endpoint=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
            expires_at=expires,
            allow=AllowList.parse(settings.webhook_allowlist),
        )
        return _out(row)


@router.get(ALL, response_model=ListOut[SubscriptionOut])
def list_subscriptions(patient_id: PatientId, db: DB, ctx: Reader) -> ListOut[SubscriptionOut]:
    """Newest first, expired ones included (``expired_at``)."""
    with db.read() as session:
        return ListOut[SubscriptionOut](
            data=[_out(r) for r in push.list_subscriptions(session, ctx, patient_id)]
        )


@router.delete(ALL + "/{subscription_id}", status_code=204)
def unsubscribe(
    patient_id: PatientId,
    subscription_id: Annotated[str, Path(max_length=64)],
    db: DB,
    ctx: Writer,
) -> Response:
    with db.write() as session:
        push.unsubscribe(session, ctx, patient_id, subscription_id)
    return Response(status_code=204)
