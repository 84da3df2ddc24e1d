"""Typed calls to Stripe Connect and Stripe Terminal, over the clinic's ``stripe``
integration (the clinic's account is the Connect platform).

Built on ``stripe_api``'s wire helpers, so the same rules hold: the ``OutboundClient``
(timeouts, retries, breaker, call log), Stripe's form encoding, a pinned
``Stripe-Version``, an ``Idempotency-Key`` from our ids on every POST that creates
something, and Stripe's errors translated in ``stripe_api._refused`` only. A call about
a connected account's own objects (its balance) carries ``Stripe-Account: acct_...``.

* accounts: ``POST /v1/accounts`` (``type=express``), ``GET /v1/accounts/{id}``,
  ``POST /v1/account_links`` (``type=account_onboarding``);
* ``GET /v1/balance`` as the connected account;
* ``POST /v1/transfers`` (``destination``, ``source_transaction``) and
  ``POST /v1/transfers/{id}/reversals``;
* Terminal: ``POST /v1/terminal/connection_tokens``; card-present PaymentIntents
  (``payment_method_types[]=card_present``, ``capture_method=manual``) and
  ``POST /v1/payment_intents/{id}/capture``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clinicbridge.payments.stripe_api import Account, Intent, _get, _post


@dataclass(frozen=True)
class StripeAccount:
    """What ClinicBridge keeps of a connected account."""

    id: str
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool
    transfers_active: bool = False  # the ``transfers`` capability is ``active``
    currently_due: list[str] = field(default_factory=list)
    past_due: list[str] = field(default_factory=list)
    disabled_reason: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> StripeAccount:
        req = obj.get("requirements") or {}
        capabilities = obj.get("capabilities") or {}
        return cls(
            id=str(obj["id"]),
            charges_enabled=bool(obj.get("charges_enabled")),
            payouts_enabled=bool(obj.get("payouts_enabled")),
            details_submitted=bool(obj.get("details_submitted")),
            transfers_active=isinstance(capabilities, dict)
            and capabilities.get("transfers") == "active",
            currently_due=[str(x) for x in req.get("currently_due") or []],
            past_due=[str(x) for x in req.get("past_due") or []],
            disabled_reason=req.get("disabled_reason") or None,
        )


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    currency: str

    @classmethod
    def of(cls, obj: Mapping[str, Any], currency: str) -> Balance:
        """The amounts in ``currency`` (Stripe lists one entry per currency)."""

        def total(kind: str) -> int:
            return sum(
                int(entry.get("amount") or 0)
                for entry in obj.get(kind) or []
                if str(entry.get("currency", "")).lower() == currency
            )

        return cls(total("available"), total("pending"), currency)


@dataclass(frozen=True)
class StripeTransfer:
    id: str
    amount: int
    currency: str
    destination: str | None
    reversed: bool

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> StripeTransfer:
        destination = obj.get("destination")
        if isinstance(destination, dict):
            destination = destination.get("id")
        return cls(
            id=str(obj["id"]),
            amount=int(obj.get("amount") or 0),
            currency=str(obj.get("currency") or "").lower(),
            destination=destination if isinstance(destination, str) else None,
            reversed=bool(obj.get("reversed")),
        )


# --- Connect -----------------------------------------------------------------------------


def create_account(
    acct: Account, *, email: str | None, metadata: Mapping[str, str], idempotency_key: str
) -> StripeAccount:
    """An Express account able to receive transfers (the provider onboards at Stripe)."""
    params: dict[str, Any] = {
        "type": "express",
        "capabilities": {"transfers": {"requested": True}},
        "metadata": dict(metadata),
    }
    if email:
        params["email"] = email
    return StripeAccount.of(_post(acct, "/v1/accounts", "accounts.create", params, idempotency_key))


def retrieve_account(acct: Account, account_id: str) -> StripeAccount:
    return StripeAccount.of(_get(acct, f"/v1/accounts/{account_id}", "accounts.retrieve"))


def create_account_link(
    acct: Account, account_id: str, *, refresh_url: str, return_url: str, idempotency_key: str
) -> tuple[str, int | None]:
    """The onboarding link (single use, short lived) and when it expires (epoch s)."""
    params = {
        "account": account_id,
        "type": "account_onboarding",
        "refresh_url": refresh_url,
        "return_url": return_url,
    }
    made = _post(acct, "/v1/account_links", "account_links.create", params, idempotency_key)
    expires = made.get("expires_at")
    return str(made.get("url") or ""), int(expires) if expires else None


def connected_balance(acct: Account, account_id: str, currency: str) -> Balance:
    found = _get(acct, "/v1/balance", "balance.retrieve", stripe_account=account_id)
    return Balance.of(found, currency.lower())


def create_transfer(
    acct: Account,
    *,
    amount: int,
    currency: str,
    destination: str,
    source_transaction: str | None,
    transfer_group: str | None,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> StripeTransfer:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "destination": destination,
        "source_transaction": source_transaction,
        "transfer_group": transfer_group,
        "metadata": dict(metadata),
    }
    return StripeTransfer.of(
        _post(acct, "/v1/transfers", "transfers.create", params, idempotency_key)
    )


def reverse_transfer(
    acct: Account,
    transfer_id: str,
    *,
    amount: int,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> int:
    """Take ``amount`` back from the destination; returns the amount reversed."""
    params: dict[str, Any] = {"amount": amount, "metadata": dict(metadata)}
    made = _post(
        acct,
        f"/v1/transfers/{transfer_id}/reversals",
        "transfers.reversals.create",
        params,
        idempotency_key,
    )
    return int(made.get("amount") or 0)


# --- Terminal ----------------------------------------------------------------------------


def create_connection_token(
    acct: Account, *, location: str | None, idempotency_key: str
) -> tuple[str, str | None]:
    """A connection token's secret for the front desk's Terminal SDK (and its location)."""
    params = {"location": location} if location else {}
    made = _post(
        acct,
        "/v1/terminal/connection_tokens",
        "terminal.connection_tokens.create",
        params,
        idempotency_key,
    )
    return str(made.get("secret") or ""), made.get("location")


def create_card_present_intent(
    acct: Account,
    *,
    amount: int,
    currency: str,
    metadata: Mapping[str, str],
    description: str,
    idempotency_key: str,
) -> Intent:
    """A PaymentIntent for a card presented at a reader; captured by the clinic."""
    params: dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "payment_method_types": ["card_present"],
        "capture_method": "manual",
        "description": description,
        "metadata": dict(metadata),
    }
    return Intent.of(
        _post(acct, "/v1/payment_intents", "payment_intents.create", params, idempotency_key)
    )


def capture_payment_intent(acct: Account, intent_id: str, *, idempotency_key: str) -> Intent:
    return Intent.of(
        _post(
            acct,
            f"/v1/payment_intents/{intent_id}/capture",
            "payment_intents.capture",
            {},
            idempotency_key,
        )
    )
