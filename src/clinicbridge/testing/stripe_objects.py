"""What the fake Stripe's objects do: payment intents, charges, refunds, checkout
sessions, disputes, and the events each change emits (see ``testing.stripe``).

A mixin of ``FakeStripe``: the methods run under its lock, on its ``objects``.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any

from clinicbridge.testing.stripe_wire import (
    StripeError,
    invalid,
    missing,
    no_such,
)
from clinicbridge.testing.stripe_wire import (
    amount_param as _amount,
)
from clinicbridge.testing.stripe_wire import (
    currency_param as _currency,
)
from clinicbridge.testing.stripe_wire import (
    metadata_param as _metadata,
)
from clinicbridge.testing.stripe_wire import (
    unexpected_state as _unexpected_state,
)

API_VERSION = "2024-06-20"
Signer = Callable[..., str]  # (payload, secret[, timestamp]) -> Stripe-Signature header

# Test payment methods (https://docs.stripe.com/testing): what confirming with each does.
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", None, "Your card has expired."),
}
SUCCEEDS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex"})
NEEDS_AUTH = frozenset({"pm_card_authenticationRequired"})


class StripeObjects:
    """Objects by id and the events emitted, newest last."""

    objects: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    base_url: str
    webhook_secret: str
    clock: Callable[[], float]
    _lock: threading.RLock
    _seq: int
    _delivered: int

    def get(self, object_id: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self.objects[object_id]))  # type: ignore[no-any-return]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in self.objects.values() if o["object"] == kind]

    # -- objects ------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self._seq:06d}{secrets.token_hex(6)}"

    def _now(self) -> int:
        return int(self.clock())

    def _find(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        found = self.objects.get(object_id)
        if found is None or found["object"] != kind:
            raise no_such(kind, object_id, param)
        return found

    def _balance(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for charge in self.of_type("charge"):
            net = charge["amount_captured"] - charge["amount_refunded"]
            totals[charge["currency"]] = totals.get(charge["currency"], 0) + net
        available = [
            {"amount": a, "currency": c, "source_types": {"card": a}}
            for c, a in sorted(totals.items())
        ] or [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]
        return {
            "object": "balance",
            "available": available,
            "livemode": False,
            "pending": [
                {"amount": 0, "currency": a["currency"], "source_types": {"card": 0}}
                for a in available
            ],
        }

    def _customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": self._new_id("cus"),
            "object": "customer",
            "created": self._now(),
            "email": params.get("email"),
            "name": params.get("name"),
            "metadata": _metadata(params),
            "livemode": False,
        }
        self.objects[customer["id"]] = customer
        return customer

    def _create_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(params, "amount")
        currency = _currency(params)
        if params.get("customer") and params["customer"] not in self.objects:
            raise no_such("customer", str(params["customer"]), "customer")
        capture = params.get("capture_method", "automatic")
        if capture not in ("automatic", "automatic_async", "manual"):
            raise invalid("Invalid capture_method", param="capture_method")
        intent_id = self._new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "status": "requires_payment_method",
            "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
            "latest_charge": None,
            "metadata": _metadata(params),
            "created": self._now(),
            "customer": params.get("customer"),
            "description": params.get("description"),
            "capture_method": capture,
            "confirmation_method": "automatic",
            "payment_method": None,
            "payment_method_types": params.get("payment_method_types") or ["card"],
            "receipt_email": params.get("receipt_email"),
            "last_payment_error": None,
            "cancellation_reason": None,
            "canceled_at": None,
            "livemode": False,
        }
        self.objects[intent_id] = intent
        self._emit("payment_intent.created", intent)
        if params.get("payment_method"):
            intent["payment_method"] = params["payment_method"]
            intent["status"] = "requires_confirmation"
        if str(params.get("confirm", "")).lower() == "true":
            return self.confirm(intent_id, params.get("payment_method"))
        return intent

    def confirm(self, intent_id: str, payment_method: str | None) -> dict[str, Any]:
        """Confirm as Stripe.js does after the patient enters a test card."""
        with self._lock:
            intent = self._find("payment_intent", intent_id, "intent")
            if intent["status"] not in (
                "requires_payment_method",
                "requires_confirmation",
                "requires_action",
            ):
                raise _unexpected_state(intent, "confirm")
            method = payment_method or intent["payment_method"]
            if not method:
                raise invalid(
                    "You cannot confirm this PaymentIntent because it's missing a payment method.",
                    code="payment_intent_unexpected_state",
                    param="payment_method",
                )
            intent["payment_method"] = method
            if method in DECLINES:
                code, decline, message = DECLINES[method]
                charge = self._charge(intent, status="failed")
                error = {
                    "type": "card_error",
                    "code": code,
                    "decline_code": decline,
                    "message": message,
                    "charge": charge["id"],
                    "payment_method": {"id": method},
                }
                intent.update(
                    status="requires_payment_method",
                    last_payment_error=error,
                    payment_method=None,
                    latest_charge=charge["id"],
                )
                self._emit("charge.failed", charge)
                self._emit("payment_intent.payment_failed", intent)
                raise StripeError(
                    402,
                    "card_error",
                    message,
                    code=code,
                    decline_code=decline,
                    charge=charge["id"],
                    payment_intent=json.loads(json.dumps(intent)),
                )
            if method in NEEDS_AUTH:
                intent.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
                self._emit("payment_intent.requires_action", intent)
                return intent
            if method not in SUCCEEDS:
                raise no_such("PaymentMethod", method, "payment_method")
            if intent["capture_method"] == "manual":
                charge = self._charge(intent, status="succeeded", captured=False)
                intent.update(
                    status="requires_capture",
                    amount_capturable=intent["amount"],
                    latest_charge=charge["id"],
                    last_payment_error=None,
                )
                self._emit("payment_intent.amount_capturable_updated", intent)
                return intent
            charge = self._charge(intent, status="succeeded", captured=True)
            intent.update(
                status="succeeded",
                amount_received=intent["amount"],
                latest_charge=charge["id"],
                last_payment_error=None,
            )
            self._emit("charge.succeeded", charge)
            self._emit("payment_intent.succeeded", intent)
            return intent

    def _charge(
        self, intent: dict[str, Any], *, status: str, captured: bool = False
    ) -> dict[str, Any]:
        ok = status == "succeeded"
        charge = {
            "id": self._new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"] if ok and captured else 0,
            "amount_refunded": 0,
            "captured": captured,
            "currency": intent["currency"],
            "paid": ok,
            "refunded": False,
            "disputed": False,
            "status": status,
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "metadata": dict(intent["metadata"]),
            "created": self._now(),
            "balance_transaction": self._new_id("txn") if ok else None,
            "customer": intent["customer"],
            "livemode": False,
        }
        self.objects[charge["id"]] = charge
        return charge

    def _cancel_intent(self, intent_id: str, reason: str | None) -> dict[str, Any]:
        intent = self._find("payment_intent", intent_id, "intent")
        if intent["status"] in ("succeeded", "canceled", "processing"):
            raise _unexpected_state(intent, "cancel")
        intent.update(
            status="canceled",
            canceled_at=self._now(),
            cancellation_reason=reason or "requested_by_customer",
        )
        self._emit("payment_intent.canceled", intent)
        return intent

    def _capture(self, intent_id: str, params: dict[str, Any]) -> dict[str, Any]:
        intent = self._find("payment_intent", intent_id, "intent")
        if intent["status"] != "requires_capture":
            raise _unexpected_state(intent, "capture")
        amount = (
            _amount(params, "amount_to_capture")
            if "amount_to_capture" in params
            else intent["amount_capturable"]
        )
        if amount > intent["amount_capturable"]:
            raise invalid(
                "amount_to_capture is greater than the amount capturable.",
                code="amount_too_large",
                param="amount_to_capture",
            )
        charge = self.objects[intent["latest_charge"]]
        charge.update(captured=True, amount_captured=amount)
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._emit("charge.captured", charge)
        self._emit("payment_intent.succeeded", intent)
        return intent

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("payment_intent"):
            intent = self._find("payment_intent", str(params["payment_intent"]), "payment_intent")
            if not intent["latest_charge"] or intent["status"] != "succeeded":
                raise invalid(
                    "This PaymentIntent does not have a successful charge to refund.",
                    code="charge_not_refundable",
                    param="payment_intent",
                )
            charge = self.objects[intent["latest_charge"]]
        elif params.get("charge"):
            charge = self._find("charge", str(params["charge"]), "charge")
        else:
            raise missing("charge")
        if charge["disputed"]:
            raise invalid(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(
                f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
            )
        amount = _amount(params, "amount") if "amount" in params else left
        if amount > left:
            raise invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                param="amount",
            )
        reason = params.get("reason")
        if reason is not None and reason not in (
            "duplicate",
            "fraudulent",
            "requested_by_customer",
        ):
            raise invalid(
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                param="reason",
            )
        refund = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "status": "succeeded",
            "reason": reason,
            "metadata": _metadata(params),
            "created": self._now(),
            "balance_transaction": self._new_id("txn"),
        }
        self.objects[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self._emit("refund.created", refund)
        self._emit("charge.refunded", charge)
        return refund

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise invalid("This fake supports mode=payment only.", param="mode")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise missing("line_items")
        total, currencies = 0, set()
        for i, item in enumerate(items):
            data = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(data, dict):
                raise missing(f"line_items[{i}][price_data]")
            currencies.add(_currency(data, f"line_items[{i}][price_data][currency]"))
            if not (data.get("product_data") or {}).get("name"):
                raise missing(f"line_items[{i}][price_data][product_data][name]")
            unit = _amount(data, "unit_amount", f"line_items[{i}][price_data][unit_amount]")
            total += unit * int(item.get("quantity", 1))
        if len(currencies) != 1:
            raise invalid("All line items must use the same currency.", param="line_items")
        now = self._now()
        expires = int(params.get("expires_at") or now + 24 * 3600)
        if not now + 1800 <= expires <= now + 24 * 3600:
            raise invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours "
                "from Checkout Session creation.",
                param="expires_at",
            )
        session_id = "cs_test_" + secrets.token_hex(12)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "url": f"{self.base_url}/c/pay/{session_id}",
            "expires_at": expires,
            "status": "open",
            "payment_status": "unpaid",
            "payment_intent": None,
            "amount_total": total,
            "amount_subtotal": total,
            "currency": currencies.pop(),
            "metadata": _metadata(params),
            "client_reference_id": params.get("client_reference_id"),
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "customer": params.get("customer"),
            "created": now,
            "livemode": False,
            "_intent_metadata": _metadata(params.get("payment_intent_data") or {}),
        }
        self.objects[session_id] = session
        return _public(session)

    def complete_checkout(
        self, session_id: str, payment_method: str = "pm_card_visa"
    ) -> dict[str, Any]:
        """The patient pays on the hosted page: a PaymentIntent succeeds, the session completes."""
        with self._lock:
            session = self._find("checkout.session", session_id, "session")
            if session["status"] != "open":
                raise invalid("This Checkout Session is no longer open.")
            intent = self._create_intent(
                {
                    "amount": str(session["amount_total"]),
                    "currency": session["currency"],
                    "metadata": session["_intent_metadata"],
                    "customer": session["customer"],
                }
            )
            self.confirm(intent["id"], payment_method)
            session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
            self._emit("checkout.session.completed", _public(session))
            return _public(session)

    def expire_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._find("checkout.session", session_id, "session")
            if session["status"] != "open":
                raise invalid(
                    "Only Checkout Sessions with a status of `open` can be expired.",
                    code="checkout_session_unexpected_state",
                )
            session["status"] = "expired"
            self._emit("checkout.session.expired", _public(session))
            return _public(session)

    def dispute(self, charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """The cardholder disputes a charge (a chargeback)."""
        with self._lock:
            charge = self._find("charge", charge_id, "charge")
            charge["disputed"] = True
            dispute = {
                "id": self._new_id("dp"),
                "object": "dispute",
                "amount": amount
                if amount is not None
                else charge["amount_captured"] - charge["amount_refunded"],
                "charge": charge_id,
                "payment_intent": charge["payment_intent"],
                "currency": charge["currency"],
                "reason": "fraudulent",
                "status": "needs_response",
                "created": self._now(),
            }
            self.objects[dispute["id"]] = dispute
            self._emit("charge.dispute.created", dispute)
            return dispute

    def close_dispute(self, dispute_id: str, status: str = "won") -> dict[str, Any]:
        with self._lock:
            dispute = self._find("dispute", dispute_id)
            dispute["status"] = status
            if status == "won":  # the fake lets a charge whose dispute was won be refunded
                self.objects[dispute["charge"]]["disputed"] = False
            self._emit("charge.dispute.closed", dispute)
            return dispute

    # -- events -------------------------------------------------------------------------

    def _emit(self, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append(
            {
                "id": self._new_id("evt"),
                "object": "event",
                "api_version": API_VERSION,
                "created": self._now(),
                "data": {"object": json.loads(json.dumps(_public(obj)))},
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
            }
        )

    def event(self, event_type: str, object_id: str | None = None) -> dict[str, Any]:
        """The latest event of ``event_type`` (about ``object_id``)."""
        for event in reversed(self.events):
            if event["type"] == event_type and object_id in (None, event["data"]["object"]["id"]):
                return dict(event)
        raise KeyError(f"no {event_type} event")

    def deliveries(
        self, sign: Signer, *, types: frozenset[str] | None = None, timestamp: int | None = None
    ) -> list[tuple[bytes, str]]:
        """Events emitted since the last call, as ``(body, Stripe-Signature)`` pairs."""
        with self._lock:
            fresh, self._delivered = self.events[self._delivered :], len(self.events)
        return [
            self.signed(e, sign, timestamp=timestamp)
            for e in fresh
            if types is None or e["type"] in types
        ]

    def signed(
        self, event: dict[str, Any], sign: Signer, *, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        body = json.dumps(event, separators=(",", ":"))
        if timestamp is None:
            return body.encode(), sign(body, self.webhook_secret)
        return body.encode(), sign(body, self.webhook_secret, timestamp)


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
