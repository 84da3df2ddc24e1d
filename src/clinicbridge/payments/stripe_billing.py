"""Stripe Billing calls for memberships: Products, recurring Prices, Customers and
Subscriptions, over the same account, wire and error translation as ``stripe_api``
(timeouts, retries, breaker, call log; ``Idempotency-Key`` on every POST).

* a plan is a Product (``cb:{plan_id}:product:v1``) and a recurring Price
  (``cb:{plan_id}:price:v1``): a retry after a timeout finds the same objects;
* a patient's Customer is made once per integration (``cb:{integration_id}:{patient_id}:
  customer:v1``) and reused;
* a Subscription is created with ``payment_behavior=default_incomplete`` (Stripe never
  charges before the first invoice's payment is confirmed) and ``trial_period_days``;
* a plan change replaces the item's price with ``proration_behavior=create_prorations``
  (the prorated difference lands on the next invoice); cancel at period end and resume
  flip ``cancel_at_period_end``; an immediate cancel is ``DELETE`` (idempotent, no key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clinicbridge.payments.stripe_api import Account, _call, _get, _id, _post


def when(value: object) -> datetime | None:
    """A Stripe timestamp (seconds) as an aware datetime."""
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) and value else None


@dataclass(frozen=True)
class Subscription:
    id: str
    status: str
    customer: str | None
    item_id: str | None
    price_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    trial_end: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    latest_invoice: str | None
    client_secret: str | None  # of the first invoice's PaymentIntent, when expanded
    metadata: dict[str, str]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Subscription:
        items = (obj.get("items") or {}).get("data") or []
        item = items[0] if items and isinstance(items[0], dict) else {}
        invoice = obj.get("latest_invoice")
        intent = invoice.get("payment_intent") if isinstance(invoice, dict) else None
        return cls(
            id=str(obj["id"]),
            status=str(obj.get("status")),
            customer=_id(obj.get("customer")),
            item_id=_id(item.get("id")),
            price_id=_id(item.get("price")),
            current_period_start=when(obj.get("current_period_start")),
            current_period_end=when(obj.get("current_period_end")),
            cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
            trial_end=when(obj.get("trial_end")),
            canceled_at=when(obj.get("canceled_at")),
            ended_at=when(obj.get("ended_at")),
            latest_invoice=_id(invoice),
            client_secret=intent.get("client_secret") if isinstance(intent, dict) else None,
            metadata=dict(obj.get("metadata") or {}),
        )


def create_product(
    acct: Account, *, name: str, metadata: Mapping[str, str], idempotency_key: str
) -> str:
    params = {"name": name, "metadata": dict(metadata)}
    return str(_post(acct, "/v1/products", "products.create", params, idempotency_key)["id"])


def create_price(
    acct: Account,
    *,
    product: str,
    amount: int,
    currency: str,
    interval: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> str:
    params: dict[str, Any] = {
        "product": product,
        "unit_amount": amount,
        "currency": currency.lower(),
        "recurring": {"interval": interval},
        "metadata": dict(metadata),
    }
    return str(_post(acct, "/v1/prices", "prices.create", params, idempotency_key)["id"])


def create_customer(
    acct: Account, *, name: str, metadata: Mapping[str, str], idempotency_key: str
) -> str:
    params = {"name": name, "metadata": dict(metadata)}
    return str(_post(acct, "/v1/customers", "customers.create", params, idempotency_key)["id"])


def create_subscription(
    acct: Account,
    *,
    customer: str,
    price: str,
    trial_days: int,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> Subscription:
    params: dict[str, Any] = {
        "customer": customer,
        "items": [{"price": price}],
        "payment_behavior": "default_incomplete",
        "payment_settings": {"save_default_payment_method": "on_subscription"},
        "metadata": dict(metadata),
        "expand": ["latest_invoice.payment_intent"],
    }
    if trial_days > 0:
        params["trial_period_days"] = trial_days
    return Subscription.of(
        _post(acct, "/v1/subscriptions", "subscriptions.create", params, idempotency_key)
    )


def retrieve_subscription(acct: Account, subscription_id: str) -> Subscription:
    path = f"/v1/subscriptions/{subscription_id}"
    return Subscription.of(_get(acct, path, "subscriptions.retrieve"))


def change_price(
    acct: Account, subscription_id: str, *, item_id: str, price: str, idempotency_key: str
) -> Subscription:
    params: dict[str, Any] = {
        "items": [{"id": item_id, "price": price}],
        "proration_behavior": "create_prorations",
    }
    path = f"/v1/subscriptions/{subscription_id}"
    return Subscription.of(_post(acct, path, "subscriptions.update", params, idempotency_key))


def set_cancel_at_period_end(
    acct: Account, subscription_id: str, cancel: bool, *, idempotency_key: str
) -> Subscription:
    path = f"/v1/subscriptions/{subscription_id}"
    params = {"cancel_at_period_end": cancel}
    return Subscription.of(_post(acct, path, "subscriptions.update", params, idempotency_key))


def cancel_now(acct: Account, subscription_id: str) -> Subscription:
    path = f"/v1/subscriptions/{subscription_id}"
    return Subscription.of(_call(acct, "DELETE", path, "subscriptions.cancel"))
