"""Typed calls to Stripe's API, over the clinic's ``stripe`` integration.

Every call goes through ``ConnectorContext.client()`` (the ``OutboundClient``:
timeouts, retries, breaker per clinic and integration, call log), form-encoded the
way Stripe documents (``metadata[booking_id]=...``, ``line_items[0][price_data][...]``),
with ``Authorization: Bearer <api_key>`` and a pinned ``Stripe-Version``.

Idempotency: every POST that creates or changes something carries an
``Idempotency-Key`` derived from our own ids (``cb:{payment_id}:pi:v1``). The outbound
client retries a POST after a failure that may have reached Stripe (read timeout,
502, 504) only because of that key, and a later retry (a job, the client calling
again) reuses it: Stripe answers the first result again, so nothing is charged or
refunded twice. Stripe keeps keys for at least 24 hours.

Errors are translated here, and only here (``_refused``):

* 429, 5xx, network failures, an open breaker → ``PaymentProviderUnavailableError``
  (503, retryable);
* 402 ``card_error`` → ``CardDeclinedError`` (the code and decline code only);
* 400/404 about a parameter we map to one of our fields (``amount``, ``currency``)
  → ``InvalidInputError`` naming our field; ``charge_disputed`` →
  ``ChargeDisputedError``; anything else → ``StripeRefusedError`` (not retryable)
  with Stripe's ``code`` and ``param``;
* 401/403 → ``StripeRefusedError`` saying the API key was refused.

Stripe's own messages are never copied: they can quote ids and amounts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.errors import ExternalServiceError, InvalidInputError
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.service import open_credentials
from clinicbridge.payments.errors import (
    CardDeclinedError,
    ChargeDisputedError,
    PaymentProviderUnavailableError,
    StripeRefusedError,
)
from clinicbridge.settings import Settings
from clinicbridge.vault.shared import shared_vault

CONNECTOR = "stripe"
STRIPE_VERSION = "2024-06-20"
# Stripe parameters that are our own fields under the same name.
_OUR_FIELDS = {"amount": "amount", "currency": "currency", "reason": "reason"}


@dataclass
class _Wiring:
    transport: httpx.BaseTransport | None = None


_wiring = _Wiring()
_lock = threading.Lock()


def configure(*, transport: httpx.BaseTransport | None = None) -> None:
    """For tests and demos: send Stripe calls through ``transport`` (a fake Stripe).
    Without it, calls go to the integration's ``api_base`` over the network."""
    with _lock:
        _wiring.transport = transport


@dataclass(frozen=True)
class Account:
    """A clinic's Stripe account, as one integration sees it."""

    integration_id: str
    currency: str  # the integration's default currency, lower case
    ctx: ConnectorContext


def stripe_integration(session: Session, tenant_id: str) -> Integration | None:
    """The clinic's enabled Stripe integration (the oldest if there are several)."""
    return session.scalars(
        sa.select(Integration)
        .where(
            Integration.tenant_id == tenant_id,
            Integration.connector == CONNECTOR,
            Integration.enabled.is_(True),
        )
        .order_by(Integration.created_at, Integration.id)
        .limit(1)
    ).first()


def account(db: Database, settings: Settings, integration: Integration) -> Account:
    """Open the integration's credentials (vault) for calls to Stripe."""
    vault = shared_vault(db, settings.master_key_file)
    with _lock:
        transport = _wiring.transport
    ctx = ConnectorContext(
        db=db,
        tenant_id=integration.tenant_id,
        integration_id=integration.id,
        credentials=open_credentials(vault, integration),
        settings=dict(integration.settings),
        transport=transport,
    )
    return Account(integration.id, str(integration.settings.get("currency", "usd")).lower(), ctx)


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    id: str
    status: str
    amount: int
    amount_received: int
    currency: str
    client_secret: str | None
    latest_charge: str | None
    metadata: dict[str, str]
    error_code: str | None  # last_payment_error.code / decline_code, if any

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Intent:
        error = obj.get("last_payment_error") or {}
        return cls(
            id=str(obj["id"]),
            status=str(obj.get("status")),
            amount=int(obj.get("amount") or 0),
            amount_received=int(obj.get("amount_received") or 0),
            currency=str(obj.get("currency") or "").lower(),
            client_secret=obj.get("client_secret"),
            latest_charge=_id(obj.get("latest_charge")),
            metadata=dict(obj.get("metadata") or {}),
            error_code=(error.get("decline_code") or error.get("code")) if error else None,
        )


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str
    payment_status: str
    payment_intent: str | None
    amount_total: int
    currency: str
    expires_at: datetime | None
    metadata: dict[str, str]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> CheckoutSession:
        expires = obj.get("expires_at")
        return cls(
            id=str(obj["id"]),
            url=obj.get("url"),
            status=str(obj.get("status")),
            payment_status=str(obj.get("payment_status")),
            payment_intent=_id(obj.get("payment_intent")),
            amount_total=int(obj.get("amount_total") or 0),
            currency=str(obj.get("currency") or "").lower(),
            expires_at=datetime.fromtimestamp(int(expires), UTC) if expires else None,
            metadata=dict(obj.get("metadata") or {}),
        )


@dataclass(frozen=True)
class StripeRefund:
    id: str
    status: str
    amount: int
    currency: str
    charge: str | None
    payment_intent: str | None
    metadata: dict[str, str]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> StripeRefund:
        return cls(
            id=str(obj["id"]),
            status=str(obj.get("status")),
            amount=int(obj.get("amount") or 0),
            currency=str(obj.get("currency") or "").lower(),
            charge=_id(obj.get("charge")),
            payment_intent=_id(obj.get("payment_intent")),
            metadata=dict(obj.get("metadata") or {}),
        )


def _id(value: object) -> str | None:
    """An id, or an expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


# --- the calls ---------------------------------------------------------------------------


def create_payment_intent(
    acct: Account,
    *,
    amount: int,
    currency: str,
    metadata: Mapping[str, str],
    description: str,
    idempotency_key: str,
) -> Intent:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "automatic_payment_methods": {"enabled": True},
        "description": description,
        "metadata": dict(metadata),
    }
    return Intent.of(
        _post(acct, "/v1/payment_intents", "payment_intents.create", params, idempotency_key)
    )


def retrieve_payment_intent(acct: Account, intent_id: str) -> Intent:
    return Intent.of(_get(acct, f"/v1/payment_intents/{intent_id}", "payment_intents.retrieve"))


def cancel_payment_intent(acct: Account, intent_id: str, *, idempotency_key: str) -> Intent:
    return Intent.of(
        _post(
            acct,
            f"/v1/payment_intents/{intent_id}/cancel",
            "payment_intents.cancel",
            {"cancellation_reason": "abandoned"},
            idempotency_key,
        )
    )


def create_checkout_session(
    acct: Account,
    *,
    amount: int,
    currency: str,
    name: str,
    metadata: Mapping[str, str],
    success_url: str,
    cancel_url: str,
    expires_at: datetime,
    idempotency_key: str,
) -> CheckoutSession:
    """A hosted payment page (a link for SMS and voice), ``mode=payment``. Its
    PaymentIntent carries the same metadata, so either object finds our payment."""
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": amount,
                    "product_data": {"name": name},
                },
                "quantity": 1,
            }
        ],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_at": int(expires_at.timestamp()),
        "metadata": dict(metadata),
        "payment_intent_data": {"metadata": dict(metadata)},
        "client_reference_id": metadata.get("payment_id", ""),
    }
    return CheckoutSession.of(
        _post(acct, "/v1/checkout/sessions", "checkout.sessions.create", params, idempotency_key)
    )


def expire_checkout_session(acct: Account, session_id: str, *, idempotency_key: str) -> None:
    _post(
        acct,
        f"/v1/checkout/sessions/{session_id}/expire",
        "checkout.sessions.expire",
        {},
        idempotency_key,
    )


def retrieve_checkout_session(acct: Account, session_id: str) -> CheckoutSession:
    path = f"/v1/checkout/sessions/{session_id}"
    return CheckoutSession.of(_get(acct, path, "checkout.sessions.retrieve"))


def create_refund(
    acct: Account,
    *,
    payment_intent: str,
    amount: int,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> StripeRefund:
    params: dict[str, Any] = {
        "payment_intent": payment_intent,
        "amount": amount,
        "reason": "requested_by_customer",
        "metadata": dict(metadata),
    }
    return StripeRefund.of(_post(acct, "/v1/refunds", "refunds.create", params, idempotency_key))


def list_refunds(acct: Account, charge: str) -> list[StripeRefund]:
    """Every refund of a charge (all pages)."""
    found: list[StripeRefund] = []
    params: dict[str, str | int] = {"charge": charge, "limit": 100}
    while True:
        page = _get(acct, "/v1/refunds", "refunds.list", params)
        data = page.get("data") or []
        found += [StripeRefund.of(item) for item in data]
        if not page.get("has_more") or not data:
            return found
        params["starting_after"] = str(data[-1]["id"])


def balance(acct: Account) -> dict[str, Any]:
    return _get(acct, "/v1/balance", "balance.retrieve")


# --- wire ---------------------------------------------------------------------------------


def encode_form(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Stripe's nested form keys: ``{"a": {"b": [1]}}`` → ``{"a[b][0]": "1"}``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(encode_form(value, name))
        elif isinstance(value, list | tuple):
            out.update(encode_form({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = str(value)
    return out


def _headers(acct: Account, stripe_account: str | None = None) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {acct.ctx.secret('api_key')}",
        "Stripe-Version": STRIPE_VERSION,
    }
    if stripe_account:  # Connect: act on a connected account (its balance, its objects)
        headers["Stripe-Account"] = stripe_account
    return headers


def _post(
    acct: Account,
    path: str,
    operation: str,
    params: Mapping[str, Any],
    idempotency_key: str,
    *,
    stripe_account: str | None = None,
) -> dict[str, Any]:
    return _call(
        acct,
        "POST",
        path,
        operation,
        stripe_account=stripe_account,
        data=encode_form(params),
        idempotency_key=idempotency_key,
    )


def _get(
    acct: Account,
    path: str,
    operation: str,
    params: Mapping[str, str | int] | None = None,
    *,
    stripe_account: str | None = None,
) -> dict[str, Any]:
    return _call(acct, "GET", path, operation, stripe_account=stripe_account, params=params)


def _call(
    acct: Account,
    method: str,
    path: str,
    operation: str,
    *,
    stripe_account: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    try:
        with acct.ctx.client(headers=_headers(acct, stripe_account)) as client:
            response = client.request(method, path, operation=operation, **kwargs)
    except ExternalServiceError as exc:  # 429, 5xx, network, breaker: nothing we can fix
        raise PaymentProviderUnavailableError(
            f"stripe {operation}: Stripe is not reachable right now ({type(exc).__name__}); "
            "try again shortly",
            integration=acct.integration_id,
            retry_after=exc.retry_after,
        ) from exc
    if response.is_success:
        body = _json(response)
        if "id" not in body and "object" not in body:
            raise StripeRefusedError(
                f"stripe {operation}: answer without an object",
                integration=acct.integration_id,
                status_code=response.status_code,
                code=None,
                param=None,
            )
        return body
    raise _refused(acct, operation, response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refused(acct: Account, operation: str, response: httpx.Response) -> Exception:
    """The one place a Stripe 4xx becomes our error (see the module docstring)."""
    error = _json(response).get("error") or {}
    kind, code, param = error.get("type"), error.get("code"), error.get("param")
    status = response.status_code
    if kind == "card_error" or status == 402:
        return CardDeclinedError(code, error.get("decline_code"))
    if code == "charge_disputed":
        return ChargeDisputedError("The charge is disputed; it cannot be refunded.")
    if status == 409 or code in ("lock_timeout", "rate_limit"):
        return PaymentProviderUnavailableError(
            f"stripe {operation}: Stripe asked to retry ({code or status})",
            integration=acct.integration_id,
        )
    if status in (400, 404) and isinstance(param, str) and param in _OUR_FIELDS:
        return InvalidInputError.one(
            _OUR_FIELDS[param], f"Stripe refused this value ({code or 'invalid'})", code or "stripe"
        )
    if status in (401, 403):
        what = "refused the API key (check the stripe integration's api_key)"
    elif kind == "idempotency_error":
        what = "refused a reused idempotency key with other parameters"
    else:
        what = "refused the request"
    detail = (
        f"stripe {operation}: {what} (HTTP {status}"
        + (f", {code}" if code else "")
        + (f", param {param}" if param else "")
        + ")"
    )
    return StripeRefusedError(
        detail,
        integration=acct.integration_id,
        status_code=status,
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
    )
