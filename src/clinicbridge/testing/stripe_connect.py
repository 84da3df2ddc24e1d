"""What the fake Stripe does for Connect and Terminal (see ``testing.stripe``):

* ``POST /v1/accounts`` (``type=express``), ``GET /v1/accounts/{id}``, and
  ``POST /v1/account_links`` (``type=account_onboarding``, a ``url`` valid 5 minutes);
  ``onboard(account)`` finishes onboarding as the provider would at Stripe, and
  ``update_account(account, ...)`` changes what Stripe requires; both emit
  ``account.updated`` with the connected account's id as the event's ``account``;
* ``GET /v1/balance`` with ``Stripe-Account: acct_...``: that account's balance
  (``set_balance`` to change it);
* ``POST /v1/transfers``: ``destination`` must have the ``transfers`` capability
  active (else 400 ``insufficient_capabilities_for_transfer``); ``source_transaction``
  a captured charge in the same currency with enough left to transfer; the amount
  lands in the destination's pending balance; ``transfer.created``;
  ``POST /v1/transfers/{id}/reversals`` takes some back (``transfer.reversed``);
* Terminal: ``POST /v1/terminal/connection_tokens``; readers (``add_reader``),
  ``POST /v1/terminal/readers/{id}/process_payment_intent`` and the test helper
  ``POST /v1/test_helpers/terminal/readers/{id}/present_payment_method``, which
  presents a test card: a ``card_present`` intent with ``capture_method=manual`` goes
  to ``requires_capture`` (``payment_intent.amount_capturable_updated``);
  ``present_card(intent)`` does the same without a reader.

A mixin of ``FakeStripe``: the methods run under its lock, on its ``objects``.
"""

from __future__ import annotations

import secrets
from typing import Any

from clinicbridge.testing.stripe_objects import StripeObjects, _public
from clinicbridge.testing.stripe_wire import (
    StripeError,
    invalid,
    missing,
    no_such,
)
from clinicbridge.testing.stripe_wire import amount_param as _amount
from clinicbridge.testing.stripe_wire import currency_param as _currency
from clinicbridge.testing.stripe_wire import metadata_param as _metadata

ONBOARDING_DUE = ["business_profile.url", "external_account", "tos_acceptance.date"]


class StripeConnectObjects(StripeObjects):
    _stripe_account: str | None = None  # the Stripe-Account header of the request

    # -- accounts -----------------------------------------------------------------------

    def _create_account(self, params: dict[str, Any]) -> dict[str, Any]:
        kind = params.get("type")
        if kind not in ("express", "standard", "custom"):
            raise invalid("Invalid type: must be one of custom, express, or standard", param="type")
        requested = params.get("capabilities") or {}
        account = {
            "id": "acct_" + secrets.token_hex(8),
            "object": "account",
            "type": kind,
            "email": params.get("email"),
            "country": params.get("country") or "CA",
            "default_currency": "cad",
            "charges_enabled": False,
            "payouts_enabled": False,
            "details_submitted": False,
            "capabilities": {name: "inactive" for name in requested},
            "requirements": {
                "currently_due": list(ONBOARDING_DUE),
                "eventually_due": list(ONBOARDING_DUE),
                "past_due": list(ONBOARDING_DUE),
                "pending_verification": [],
                "disabled_reason": "requirements.past_due",
                "current_deadline": None,
            },
            "metadata": _metadata(params),
            "created": self._now(),
            "livemode": False,
            "_balance": {"available": 0, "pending": 0, "currency": "cad"},
        }
        self.objects[account["id"]] = account
        return _public(account)

    def _account_link(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("account"):
            raise missing("account")
        account = self._find("account", str(params["account"]), "account")
        if params.get("type") not in ("account_onboarding", "account_update"):
            raise invalid("Invalid type", param="type")
        if not params.get("return_url"):
            raise missing("return_url")
        if not params.get("refresh_url"):
            raise missing("refresh_url")
        now = self._now()
        return {
            "object": "account_link",
            "created": now,
            "expires_at": now + 300,
            "url": f"https://connect.stripe.test/setup/e/{account['id']}/{secrets.token_hex(8)}",
        }

    def onboard(self, account_id: str) -> dict[str, Any]:
        """The provider finished onboarding: everything enabled, nothing due."""
        return self.update_account(
            account_id,
            details_submitted=True,
            charges_enabled=True,
            payouts_enabled=True,
            currently_due=[],
            past_due=[],
            disabled_reason=None,
        )

    def update_account(
        self,
        account_id: str,
        *,
        details_submitted: bool | None = None,
        charges_enabled: bool | None = None,
        payouts_enabled: bool | None = None,
        currently_due: list[str] | None = None,
        past_due: list[str] | None = None,
        disabled_reason: str | bool | None = False,
    ) -> dict[str, Any]:
        """Change the account as Stripe would (``disabled_reason=False``: unchanged)."""
        with self._lock:
            account = self._find("account", account_id, "account")
            for name, value in (
                ("details_submitted", details_submitted),
                ("charges_enabled", charges_enabled),
                ("payouts_enabled", payouts_enabled),
            ):
                if value is not None:
                    account[name] = value
            req = account["requirements"]
            if currently_due is not None:
                req["currently_due"] = list(currently_due)
            if past_due is not None:
                req["past_due"] = list(past_due)
            if disabled_reason is not False:
                req["disabled_reason"] = disabled_reason
            active = "active" if account["charges_enabled"] or account["payouts_enabled"] else None
            for name in account["capabilities"]:
                account["capabilities"][name] = active or "inactive"
            self._emit("account.updated", account)
            self.events[-1]["account"] = account_id
            return account

    def set_balance(self, account_id: str, *, available: int, pending: int) -> None:
        with self._lock:
            balance = self._find("account", account_id, "account")["_balance"]
            balance.update(available=available, pending=pending)

    def _account_balance(self, account_id: str) -> dict[str, Any]:
        found = self.objects.get(account_id)
        if found is None or found["object"] != "account":
            raise StripeError(
                403,
                "invalid_request_error",
                "The provided key does not have access to account "
                f"'{account_id}' (or that account does not exist).",
                code="account_invalid",
            )
        b = found["_balance"]
        return {
            "object": "balance",
            "available": [{"amount": b["available"], "currency": b["currency"]}],
            "pending": [{"amount": b["pending"], "currency": b["currency"]}],
            "livemode": False,
        }

    # -- transfers ----------------------------------------------------------------------

    def _create_transfer(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(params, "amount")
        currency = _currency(params)
        if not params.get("destination"):
            raise missing("destination")
        destination = self.objects.get(str(params["destination"]))
        if destination is None or destination["object"] != "account":
            raise no_such("destination", str(params["destination"]), "destination")
        if destination["capabilities"].get("transfers") != "active":
            raise invalid(
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
            )
        source = params.get("source_transaction")
        if source:
            charge = self._find("charge", str(source), "source_transaction")
            if not charge["captured"]:
                raise invalid("The source charge is not captured.", param="source_transaction")
            if charge["currency"] != currency:
                raise invalid(
                    "The currency of source_transaction's balance transaction must match "
                    "the transfer currency.",
                    param="currency",
                )
            sent = sum(
                t["amount"]
                for t in self.of_type("transfer")
                if t.get("source_transaction") == charge["id"]
            )
            if amount > charge["amount_captured"] - charge["amount_refunded"] - sent:
                raise invalid(
                    "Insufficient funds on the source transaction.",
                    code="balance_insufficient",
                    param="amount",
                )
        transfer = {
            "id": self._new_id("tr"),
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "currency": currency,
            "destination": destination["id"],
            "destination_payment": self._new_id("py"),
            "source_transaction": source or None,
            "transfer_group": params.get("transfer_group"),
            "reversed": False,
            "metadata": _metadata(params),
            "created": self._now(),
            "livemode": False,
        }
        self.objects[transfer["id"]] = transfer
        destination["_balance"]["pending"] += amount
        self._emit("transfer.created", transfer)
        return transfer

    def _reverse_transfer(self, transfer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        transfer = self._find("transfer", transfer_id, "id")
        left = transfer["amount"] - transfer["amount_reversed"]
        amount = _amount(params, "amount") if "amount" in params else left
        if amount > left:
            raise invalid(
                "You have attempted to reverse more than the amount left on this transfer.",
                param="amount",
            )
        reversal = {
            "id": self._new_id("trr"),
            "object": "transfer_reversal",
            "amount": amount,
            "currency": transfer["currency"],
            "transfer": transfer["id"],
            "metadata": _metadata(params),
            "created": self._now(),
        }
        self.objects[reversal["id"]] = reversal
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] >= transfer["amount"]
        self.objects[transfer["destination"]]["_balance"]["pending"] -= amount
        self._emit("transfer.reversed", transfer)
        return reversal

    # -- terminal -----------------------------------------------------------------------

    def _connection_token(self, params: dict[str, Any]) -> dict[str, Any]:
        token: dict[str, Any] = {
            "object": "terminal.connection_token",
            "secret": "pst_test_" + secrets.token_urlsafe(24),
        }
        if params.get("location"):
            token["location"] = params["location"]
        return token

    def add_reader(self, label: str = "Front desk") -> str:
        with self._lock:
            reader_id = "tmr_" + secrets.token_hex(8)
            reader: dict[str, Any] = {
                "id": reader_id,
                "object": "terminal.reader",
                "device_type": "simulated_wisepos_e",
                "label": label,
                "status": "online",
                "action": None,
                "created": self._now(),
                "livemode": False,
            }
            self.objects[reader_id] = reader
            return reader_id

    def _process_on_reader(self, reader_id: str, params: dict[str, Any]) -> dict[str, Any]:
        reader = self._find("terminal.reader", reader_id, "reader")
        if not params.get("payment_intent"):
            raise missing("payment_intent")
        intent = self._find("payment_intent", str(params["payment_intent"]), "payment_intent")
        reader["action"] = {
            "type": "process_payment_intent",
            "status": "in_progress",
            "process_payment_intent": {"payment_intent": intent["id"]},
        }
        return reader

    def _present_on_reader(self, reader_id: str) -> dict[str, Any]:
        reader = self._find("terminal.reader", reader_id, "reader")
        action = reader.get("action") or {}
        if action.get("type") != "process_payment_intent" or action.get("status") != "in_progress":
            raise invalid(
                "The reader has no payment to present a card for.", code="terminal_reader_busy"
            )
        self.present_card(action["process_payment_intent"]["payment_intent"])
        action["status"] = "succeeded"
        return reader

    def present_card(self, intent_id: str) -> dict[str, Any]:
        """A test card tapped on the reader for a ``card_present`` intent."""
        with self._lock:
            intent = self._find("payment_intent", intent_id, "intent")
            if "card_present" not in intent["payment_method_types"]:
                raise invalid(
                    "This PaymentIntent does not accept card_present payments.",
                    param="payment_method_types",
                )
            if intent["status"] != "requires_payment_method":
                raise invalid(
                    "You cannot present a card for this PaymentIntent because it has a "
                    f"status of {intent['status']}.",
                    code="payment_intent_unexpected_state",
                )
            intent["payment_method"] = "pm_" + secrets.token_hex(8)
            manual = intent["capture_method"] == "manual"
            charge = self._charge(intent, status="succeeded", captured=not manual)
            charge["payment_method_details"] = {
                "type": "card_present",
                "card_present": {
                    "brand": "visa",
                    "last4": "4242",
                    "read_method": "contactless_emv",
                },
            }
            if manual:
                intent.update(
                    status="requires_capture",
                    amount_capturable=intent["amount"],
                    latest_charge=charge["id"],
                )
                self._emit("payment_intent.amount_capturable_updated", intent)
            else:
                intent.update(
                    status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
                )
                self._emit("charge.succeeded", charge)
                self._emit("payment_intent.succeeded", intent)
            return intent

    # -- routes -------------------------------------------------------------------------

    def _route_connect(
        self, method: str, parts: list[str], params: dict[str, Any]
    ) -> dict[str, Any] | None:
        match method, parts:
            case "GET", ["balance"] if self._stripe_account:
                return self._account_balance(self._stripe_account)
            case "POST", ["accounts"]:
                return self._create_account(params)
            case "GET", ["accounts", object_id]:
                return _public(self._find("account", object_id, "account"))
            case "POST", ["account_links"]:
                return self._account_link(params)
            case "POST", ["transfers"]:
                return self._create_transfer(params)
            case "POST", ["transfers", object_id, "reversals"]:
                return self._reverse_transfer(object_id, params)
            case "GET", ["transfers", object_id]:
                return self._find("transfer", object_id, "transfer")
            case "POST", ["terminal", "connection_tokens"]:
                return self._connection_token(params)
            case "POST", ["terminal", "readers", reader_id, "process_payment_intent"]:
                return self._process_on_reader(reader_id, params)
            case "POST", [
                "test_helpers",
                "terminal",
                "readers",
                reader_id,
                "present_payment_method",
            ]:
                return self._present_on_reader(reader_id)
        return None
