"""Web push: patients' subscriptions, and the sender that delivers to them.

**Subscriptions** are what a browser's ``pushManager.subscribe()`` returns
(``{"endpoint", "expirationTime", "keys": {"p256dh", "auth"}}``), registered by the
clinic's patient-facing app for one patient. The same endpoint registered again is
updated (and may move to another patient: a shared tablet); its keys are checked to be
a P-256 point and a 16-byte secret. Endpoints are checked like outbound webhook URLs
(``https`` to a public address; see ``webhooks.ssrf``), at registration and again at
every connection.

**Sending** (channel ``push``): a message goes to the patient's newest active
subscriptions (up to ``MAX_DEVICES``), named on the message when it is queued. The
payload, ``{"title", "body", "message_id"}`` as JSON, is encrypted for each browser
with RFC 8291 ``aes128gcm`` (``pywebpush``) and signed with the clinic's VAPID key
(``py_vapid``, RFC 8292), then posted through ``clinicbridge.http`` with ``TTL``,
``Urgency`` and ``Topic`` (the message id: a push service replaces a still-queued
message of the same topic instead of delivering both). 201/202 is accepted; 404/410
mark the subscription expired for good; 413 and other 4xx fail the message.

Exactly once: push services take no idempotency key and cannot be asked about a
message, so an attempt cut short is marked ``unknown`` and not resent (as SMTP). A
message accepted for one device is ``sent`` even if another device failed, so a
retry never repeats it on the devices that had it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ExternalServiceError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.http import OutboundClient
from clinicbridge.integrations.connectors.web_push import b64url_decode
from clinicbridge.messaging.providers import (
    OutcomeUnknownError,
    Outgoing,
    Sender,
    maybe_accepted,
    register,
)
from clinicbridge.messaging.push_models import PushSubscription
from clinicbridge.patients.models import Patient
from clinicbridge.webhooks.ssrf import (
    AllowList,
    ForbiddenDestinationError,
    GuardedTransport,
    check_shape,
)

CONNECTOR = "web_push"
MAX_DEVICES = 5
VAPID_LIFETIME = timedelta(hours=12)  # RFC 8292 allows up to 24 h
_GONE = (404, 410)


# --- subscriptions ---------------------------------------------------------------------


def _patient(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    return get_scoped(session, Patient, ctx.tenant_id, id=patient_id)


def _check_keys(p256dh: str, auth: str) -> None:
    try:
        point = b64url_decode(p256dh)
    except ValueError:
        point = b""
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        on_curve = len(point) == 65
    except ValueError:
        on_curve = False
    if not on_curve:
        raise InvalidInputError.one("keys.p256dh", "must be a base64url P-256 public key")
    try:
        secret = b64url_decode(auth)
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise InvalidInputError.one("keys.auth", "must be a base64url 16-byte secret")


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


def subscribe(
    session: Session,
    ctx: Ctx,
    patient_id: str,
    *,
    endpoint: str,
    p256dh: str,
    auth: str,
    expires_at: datetime | None,
    allow: AllowList,
) -> PushSubscription:
    """Register (or refresh) a browser's subscription for the patient."""
    patient = _patient(session, ctx, patient_id)
    try:
        check_shape(endpoint, allow)
    except ForbiddenDestinationError as exc:
        raise InvalidInputError.one("endpoint", exc.detail, "forbidden_destination") from None
    _check_keys(p256dh, auth)
    digest = endpoint_hash(endpoint)
    row = session.scalars(
        scoped_select(PushSubscription, ctx.tenant_id)
        .where(PushSubscription.endpoint_sha256 == digest)
        .with_for_update()
    ).first()
    if row is None:
        row = PushSubscription(
            id=new_id("psub"),
            tenant_id=ctx.tenant_id,
            endpoint=endpoint,
            endpoint_sha256=digest,
            created_at=ctx.now,
        )
        session.add(row)
    moved_from = row.patient_id if row.patient_id not in (None, patient.id) else None
    row.patient_id, row.p256dh, row.auth = patient.id, p256dh, auth
    row.expires_at, row.expired_at, row.updated_at = expires_at, None, ctx.now
    session.flush()
    diff: dict[str, Any] = {"origin": origin(endpoint)}
    if moved_from is not None:
        diff["moved_from_patient"] = moved_from
    record(session, ctx, "push_subscription.create", "patient", patient.id, phi=True, diff=diff)
    return row


def list_subscriptions(session: Session, ctx: Ctx, patient_id: str) -> list[PushSubscription]:
    patient = _patient(session, ctx, patient_id)
    return list(
        session.scalars(
            scoped_select(PushSubscription, ctx.tenant_id)
            .where(PushSubscription.patient_id == patient.id)
            .order_by(PushSubscription.created_at.desc(), PushSubscription.id.desc())
        )
    )


def unsubscribe(session: Session, ctx: Ctx, patient_id: str, subscription_id: str) -> None:
    patient = _patient(session, ctx, patient_id)
    row = session.scalars(
        scoped_select(PushSubscription, ctx.tenant_id).where(
            PushSubscription.id == subscription_id, PushSubscription.patient_id == patient.id
        )
    ).first()
    if row is None:
        raise NotFoundError("No such push subscription.")
    record(session, ctx, "push_subscription.delete", "patient", patient.id, phi=True,
           diff={"origin": origin(row.endpoint)})  # fmt: skip
    session.delete(row)


def active_devices(session: Session, tenant_id: str, patient_id: str, now: datetime) -> list[str]:
    """Ids of the patient's newest subscriptions that may still receive messages."""
    return list(
        session.scalars(
            sa.select(PushSubscription.id)
            .where(
                PushSubscription.tenant_id == tenant_id,
                PushSubscription.patient_id == patient_id,
                PushSubscription.expired_at.is_(None),
                sa.or_(PushSubscription.expires_at.is_(None), PushSubscription.expires_at > now),
            )
            .order_by(PushSubscription.created_at.desc(), PushSubscription.id.desc())
            .limit(MAX_DEVICES)
        )
    )


def origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


# --- sending -------------------------------------------------------------------------------


def _payload(out: Outgoing) -> bytes:
    return json.dumps(
        {"title": out.subject or "", "body": out.body, "message_id": out.message_id},
        ensure_ascii=False,
    ).encode()


def _encrypt(sub: PushSubscription, payload: bytes) -> bytes:
    """RFC 8291 ``aes128gcm`` for this browser. Imported here: ``pywebpush`` pulls in
    ``aiohttp``, which every process would otherwise load at start-up."""
    from pywebpush import WebPusher

    keys = {"p256dh": sub.p256dh, "auth": sub.auth}
    return bytes(WebPusher({"endpoint": sub.endpoint, "keys": keys}).encode(payload)["body"])


def _headers(out: Outgoing, sub: PushSubscription, now: datetime) -> dict[str, str]:
    from py_vapid import Vapid02

    vapid = Vapid02.from_raw(out.credentials["vapid_private_key"].reveal().encode())
    claims = {
        "aud": origin(sub.endpoint),
        "exp": int((now + VAPID_LIFETIME).timestamp()),
        "sub": str(out.settings["subject"]),
    }
    return {
        **vapid.sign(claims),
        "TTL": str(int(out.settings.get("ttl_seconds", 24 * 3600))),
        "Urgency": str(out.settings.get("urgency", "normal")),
        "Topic": out.message_id.split("_", 1)[-1][:32],
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
    }


def _post(out: Outgoing, sub: PushSubscription, body: bytes, now: datetime) -> httpx.Response:
    assert out.db is not None
    transport = GuardedTransport(AllowList.parse(out.allowlist))
    with OutboundClient(
        out.db,
        tenant_id=out.tenant_id,
        integration=out.integration_id,
        base_url=origin(sub.endpoint),
        transport=transport,
    ) as client:
        return client.post(
            sub.endpoint,
            operation="push.send",
            content=body,
            headers=_headers(out, sub, now),
        )


def send_push(out: Outgoing, now: datetime) -> str:
    """Deliver to each device named on the message; the push service's id of the first
    accepted one (its ``Location``), or why none took it."""
    if out.db is None:
        raise RuntimeError("the push sender needs the database: the send job gives it")
    ids = [i for i in out.to_address.split(",") if i]
    with out.db.read() as session:
        subs = list(
            session.scalars(
                sa.select(PushSubscription).where(
                    PushSubscription.tenant_id == out.tenant_id,
                    PushSubscription.id.in_(ids),
                    PushSubscription.expired_at.is_(None),
                )
            )
        )
    payload = _payload(out)
    accepted: dict[str, str] = {}  # subscription id -> the push service's message URL
    gone: list[str] = []
    problem: ExternalServiceError | None = None
    for sub in subs:
        body = _encrypt(sub, payload)
        try:
            response = _post(out, sub, body, now)
        except ForbiddenDestinationError:
            problem = problem or _error("the endpoint is not a public address", None)
            continue
        except ExternalServiceError as exc:
            if maybe_accepted(exc):  # this device may have it: never resend the message
                problem = OutcomeUnknownError(
                    f"web push: {exc.detail}; the push service may have accepted it",
                    integration=CONNECTOR,
                    status_code=exc.status_code,
                )
            elif not isinstance(problem, OutcomeUnknownError):
                problem = exc
            continue
        if response.status_code in (200, 201, 202):
            accepted[sub.id] = response.headers.get("location") or sub.id
        elif response.status_code in _GONE:
            gone.append(sub.id)
        elif not isinstance(problem, OutcomeUnknownError):
            code = response.status_code
            problem = _error(f"the push service refused the message ({code})", code)
    _record_outcome(out.db, list(accepted), gone, now)
    if accepted:
        return next(iter(accepted.values()))[:255]
    raise problem or _error("the patient has no active push subscription", None)


def _error(detail: str, status: int | None) -> ExternalServiceError:
    return ExternalServiceError(
        f"web push: {detail}", integration=CONNECTOR, status_code=status, retryable=status == 429
    )


def _record_outcome(db: Database, accepted: list[str], gone: list[str], now: datetime) -> None:
    with db.write() as session:
        if gone:
            session.execute(
                sa.update(PushSubscription)
                .where(PushSubscription.id.in_(gone))
                .values(expired_at=now, updated_at=now)
            )
        if accepted:
            session.execute(
                sa.update(PushSubscription)
                .where(PushSubscription.id.in_(accepted))
                .values(last_success_at=now)
            )


register(Sender(CONNECTOR, ("push",), send_push))
