"""The fake Stripe's Billing objects: products, recurring prices, subscriptions and
their invoices, with the events a real account sends (a mixin of ``FakeStripe``).

What it does as Stripe documents it (API version 2024-06-20):

* ``POST /v1/products``, ``POST /v1/prices`` (``recurring[interval]`` month|year);
* ``POST /v1/subscriptions`` with ``trial_period_days``: ``trialing`` until
  ``trial_end``, a $0 invoice paid at once; without a trial and
  ``payment_behavior=default_incomplete``: ``incomplete`` with an open first invoice
  whose PaymentIntent the patient confirms (``pay_invoice``); ``expand[]`` of
  ``latest_invoice.payment_intent`` is honoured;
* ``POST /v1/subscriptions/{id}``: ``items[0][id]`` + ``items[0][price]`` changes the
  price; with ``proration_behavior=create_prorations`` (the default) the unused time on
  the old price and the remaining time on the new one become pending proration lines
  of the next invoice (``always_invoice`` invoices them at once, ``none`` skips them;
  no proration while trialing); ``cancel_at_period_end`` true/false;
* ``DELETE /v1/subscriptions/{id}``: canceled now, ``customer.subscription.deleted``;
* an invoice whose total is not positive is paid from (or credits) the customer's
  ``balance``; ``invoice.paid`` / ``invoice.payment_failed`` as they happen.

Test controls: ``pay_invoice``, ``fail_invoice``, ``advance_period`` (the period ends:
the trial converts, the subscription renews with a new invoice, paid or declined, or a
subscription set to cancel at period end is canceled). A month is 30 days, a year 365.
"""

from __future__ import annotations

from typing import Any

from clinicbridge.testing.stripe_objects import StripeObjects
from clinicbridge.testing.stripe_wire import (
    StripeError,
    invalid,
    missing,
    no_such,
)
from clinicbridge.testing.stripe_wire import amount_param as _amount
from clinicbridge.testing.stripe_wire import currency_param as _currency
from clinicbridge.testing.stripe_wire import metadata_param as _metadata

PERIOD_SECONDS = {"month": 30 * 86400, "year": 365 * 86400}
DAY = 86400


class StripeBilling(StripeObjects):
    """Billing objects on the fake's ``objects`` (the methods run under its lock)."""

    def _billing_route(self, method: str, parts: list[str], params: dict[str, Any]) -> Any:
        match method, parts:
            case "POST", ["products"]:
                return self._product(params)
            case "POST", ["prices"]:
                return self._price(params)
            case "GET", ["prices", object_id]:
                return self._find("price", object_id)
            case "POST", ["subscriptions"]:
                return self._create_subscription(params)
            case "GET", ["subscriptions", object_id]:
                return self._find("subscription", object_id)
            case "POST", ["subscriptions", object_id]:
                return self._update_subscription(object_id, params)
            case "DELETE", ["subscriptions", object_id]:
                return self._delete_subscription(object_id)
            case "GET", ["invoices", object_id]:
                return self._find("invoice", object_id)
        return None  # not a Billing path

    # -- products and prices --------------------------------------------------------

    def _product(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("name"):
            raise missing("name")
        product = {
            "id": self._new_id("prod"),
            "object": "product",
            "name": params["name"],
            "active": True,
            "metadata": _metadata(params),
            "created": self._now(),
            "livemode": False,
        }
        self.objects[product["id"]] = product
        return product

    def _price(self, params: dict[str, Any]) -> dict[str, Any]:
        product = params.get("product")
        if not product:
            raise missing("product")
        self._find("product", str(product), "product")
        recurring = params.get("recurring") or {}
        interval = recurring.get("interval") if isinstance(recurring, dict) else None
        if interval is not None and interval not in ("day", "week", "month", "year"):
            raise invalid("Invalid recurring[interval]", param="recurring[interval]")
        price = {
            "id": self._new_id("price"),
            "object": "price",
            "active": True,
            "currency": _currency(params),
            "unit_amount": _amount(params, "unit_amount"),
            "product": product,
            "type": "recurring" if interval else "one_time",
            "recurring": {"interval": interval, "interval_count": 1} if interval else None,
            "metadata": _metadata(params),
            "created": self._now(),
            "livemode": False,
        }
        self.objects[price["id"]] = price
        return price

    def _recurring_price(self, price_id: object, param: str) -> dict[str, Any]:
        if not price_id:
            raise missing(param)
        price = self._find("price", str(price_id), param)
        if price["type"] != "recurring" or price["recurring"]["interval"] not in PERIOD_SECONDS:
            raise invalid(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=param,
            )
        return price

    # -- subscriptions --------------------------------------------------------------

    def _create_subscription(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise missing("customer")
        self._find("customer", str(customer), "customer")
        items = params.get("items")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise invalid("This fake supports exactly one subscription item.", param="items")
        price = self._recurring_price(items[0].get("price"), "items[0][price]")
        trial_days = int(params.get("trial_period_days") or 0)
        if trial_days < 0 or trial_days > 730:
            raise invalid("Invalid trial_period_days", param="trial_period_days")
        now = self._now()
        sub_id = self._new_id("sub")
        sub: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": "trialing" if trial_days else "incomplete",
            "currency": price["currency"],
            "collection_method": "charge_automatically",
            "items": {
                "object": "list",
                "data": [self._item(sub_id, price, now)],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            "created": now,
            "start_date": now,
            "billing_cycle_anchor": now + trial_days * DAY if trial_days else now,
            "current_period_start": now,
            "current_period_end": now
            + (trial_days * DAY if trial_days else PERIOD_SECONDS[price["recurring"]["interval"]]),
            "trial_start": now if trial_days else None,
            "trial_end": now + trial_days * DAY if trial_days else None,
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "ended_at": None,
            "latest_invoice": None,
            "metadata": _metadata(params),
            "livemode": False,
            "_pending": [],
            "_payment_method": None,
        }
        self.objects[sub_id] = sub
        self._emit("customer.subscription.created", sub)
        amount = 0 if trial_days else price["unit_amount"]
        line = self._line(price, amount, sub, "subscription", proration=False)
        self._invoice(sub, [line], "subscription_create")
        answer = dict(sub)
        if "latest_invoice.payment_intent" in (params.get("expand") or []):
            invoice = dict(self.objects[sub["latest_invoice"]])
            if invoice.get("payment_intent"):
                invoice["payment_intent"] = dict(self.objects[invoice["payment_intent"]])
            answer["latest_invoice"] = invoice
        return answer

    def _item(self, sub_id: str, price: dict[str, Any], now: int) -> dict[str, Any]:
        return {
            "id": self._new_id("si"),
            "object": "subscription_item",
            "price": dict(price),
            "quantity": 1,
            "subscription": sub_id,
            "created": now,
        }

    def _update_subscription(self, sub_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._find("subscription", sub_id, "subscription")
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
                param="subscription",
            )
        previous: dict[str, Any] = {}
        items = params.get("items")
        if items is not None:
            if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
                raise invalid("This fake supports exactly one subscription item.", param="items")
            item = sub["items"]["data"][0]
            if items[0].get("id") != item["id"]:
                raise no_such("subscription_item", str(items[0].get("id")), "items[0][id]")
            price = self._recurring_price(items[0].get("price"), "items[0][price]")
            if price["currency"] != sub["currency"]:
                raise invalid(
                    "The price's currency must match the subscription's currency.",
                    param="items[0][price]",
                )
            old = item["price"]
            if price["id"] != old["id"]:
                previous["items"] = {"data": [{**item, "price": dict(old)}]}
                item["price"] = dict(price)
                self._prorate(sub, old, price, params.get("proration_behavior"))
        if "cancel_at_period_end" in params:
            flag = str(params["cancel_at_period_end"]).lower() == "true"
            if flag != sub["cancel_at_period_end"]:
                previous["cancel_at_period_end"] = sub["cancel_at_period_end"]
                sub.update(
                    cancel_at_period_end=flag,
                    cancel_at=sub["current_period_end"] if flag else None,
                    canceled_at=self._now() if flag else None,
                )
        if params.get("metadata"):
            sub["metadata"] = {**sub["metadata"], **_metadata(params)}
        if previous:
            self._emit_update(sub, previous)
        return sub

    def _prorate(
        self, sub: dict[str, Any], old: dict[str, Any], new: dict[str, Any], behavior: Any
    ) -> None:
        behavior = behavior or "create_prorations"
        if behavior not in ("create_prorations", "always_invoice", "none"):
            raise invalid("Invalid proration_behavior", param="proration_behavior")
        if behavior == "none" or sub["status"] == "trialing":
            return
        start, end, now = sub["current_period_start"], sub["current_period_end"], self._now()
        left = max(0, end - now)
        if left == 0:
            return
        span = end - start
        unused = -round(old["unit_amount"] * left / span)
        remaining = round(new["unit_amount"] * left / span)
        lines = [
            self._line(old, unused, sub, "invoiceitem", proration=True, since=now),
            self._line(new, remaining, sub, "invoiceitem", proration=True, since=now),
        ]
        if behavior == "always_invoice":
            self._invoice(sub, lines, "subscription_update")
        else:
            sub["_pending"].extend(lines)

    def _delete_subscription(self, sub_id: str) -> dict[str, Any]:
        sub = self._find("subscription", sub_id, "subscription")
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise no_such("subscription", sub_id, "subscription")
        self._end(sub)
        return sub

    def _end(self, sub: dict[str, Any]) -> None:
        now = self._now()
        sub.update(
            status="canceled",
            ended_at=now,
            canceled_at=sub["canceled_at"] or now,
            cancel_at=sub["cancel_at"] or now,
        )
        self._emit("customer.subscription.deleted", sub)

    def _emit_update(self, sub: dict[str, Any], previous: dict[str, Any]) -> None:
        self._emit("customer.subscription.updated", sub)
        self.events[-1]["data"]["previous_attributes"] = previous

    # -- invoices -------------------------------------------------------------------

    def _line(
        self,
        price: dict[str, Any],
        amount: int,
        sub: dict[str, Any],
        kind: str,
        *,
        proration: bool,
        since: int | None = None,
    ) -> dict[str, Any]:
        start = since if since is not None else sub["current_period_start"]
        if proration:
            what = "Unused time on" if amount < 0 else "Remaining time on"
            description = f"{what} {price['id']} after {start}"
        else:
            description = f"1 x {price['id']}"
        return {
            "id": self._new_id("il"),
            "object": "line_item",
            "amount": amount,
            "currency": price["currency"],
            "description": description,
            "proration": proration,
            "period": {"start": start, "end": sub["current_period_end"]},
            "price": dict(price),
            "quantity": 1,
            "type": kind,
        }

    def _invoice(
        self, sub: dict[str, Any], lines: list[dict[str, Any]], reason: str
    ) -> dict[str, Any]:
        customer = self.objects[sub["customer"]]
        total = sum(line["amount"] for line in lines)
        balance = int(customer.get("balance") or 0)  # negative: credit
        due = max(0, total + balance)
        now = self._now()
        invoice: dict[str, Any] = {
            "id": self._new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "subscription": sub["id"],
            "subscription_details": {"metadata": dict(sub["metadata"])},
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "currency": sub["currency"],
            "subtotal": total,
            "total": total,
            "starting_balance": balance,
            "ending_balance": min(0, total + balance) if due == 0 else 0,
            "amount_due": due,
            "amount_paid": 0,
            "amount_remaining": due,
            "attempt_count": 0,
            "paid": False,
            "status": "open",
            "payment_intent": None,
            "lines": {"object": "list", "data": lines, "has_more": False, "url": "/v1/invoices"},
            "period_start": sub["current_period_start"],
            "period_end": sub["current_period_end"],
            "status_transitions": {"finalized_at": now, "paid_at": None},
            "created": now,
            "metadata": {},
            "livemode": False,
        }
        self.objects[invoice["id"]] = invoice
        sub["latest_invoice"] = invoice["id"]
        customer["balance"] = min(0, total + balance) if due == 0 else 0
        if due == 0:
            self._mark_paid(invoice, sub)
        else:
            intent = self._create_intent(
                {"amount": str(due), "currency": sub["currency"], "customer": sub["customer"]}
            )
            intent["invoice"] = invoice["id"]  # from the start, as Stripe's own do
            self.events[-1]["data"]["object"]["invoice"] = invoice["id"]
            invoice["payment_intent"] = intent["id"]
        return invoice

    def _mark_paid(self, invoice: dict[str, Any], sub: dict[str, Any]) -> None:
        invoice.update(
            status="paid",
            paid=True,
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            status_transitions={**invoice["status_transitions"], "paid_at": self._now()},
        )
        self._emit("invoice.paid", invoice)
        if sub["status"] in ("incomplete", "past_due", "unpaid"):
            before = sub["status"]
            sub["status"] = "active"
            self._emit_update(sub, {"status": before})

    def pay_invoice(self, invoice_id: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
        """The patient (or the saved card) pays an open invoice; a decline fails it."""
        with self._lock:
            invoice = self._find("invoice", invoice_id)
            if invoice["status"] != "open":
                raise invalid("Invoice is already paid.", code="invoice_not_open")
            sub = self.objects[invoice["subscription"]]
            invoice["attempt_count"] += 1
            try:
                self.confirm(invoice["payment_intent"], payment_method)
            except StripeError:
                self._failed(invoice, sub)
                return invoice
            sub["_payment_method"] = payment_method
            self._mark_paid(invoice, sub)
            return invoice

    def fail_invoice(self, invoice_id: str) -> dict[str, Any]:
        return self.pay_invoice(invoice_id, "pm_card_chargeDeclined")

    def _failed(self, invoice: dict[str, Any], sub: dict[str, Any]) -> None:
        self._emit("invoice.payment_failed", invoice)
        if sub["status"] in ("active", "trialing"):
            sub["status"] = "past_due"
            self._emit_update(sub, {"status": "active"})

    def advance_period(self, sub_id: str, *, pay: bool = True) -> dict[str, Any]:
        """The current period (or trial) ends: cancel if asked to at period end, else
        renew with an invoice for the new period plus the pending prorations."""
        with self._lock:
            sub = self._find("subscription", sub_id, "subscription")
            if sub["cancel_at_period_end"]:
                self._end(sub)
                return sub
            price = sub["items"]["data"][0]["price"]
            start = sub["current_period_end"]
            previous = {
                "current_period_start": sub["current_period_start"],
                "current_period_end": start,
                "status": sub["status"],
            }
            sub.update(
                current_period_start=start,
                current_period_end=start + PERIOD_SECONDS[price["recurring"]["interval"]],
                status="active" if sub["status"] == "trialing" else sub["status"],
            )
            self._emit_update(sub, previous)
            lines = [
                *sub["_pending"],
                self._line(price, price["unit_amount"], sub, "subscription", proration=False),
            ]
            sub["_pending"] = []
            invoice = self._invoice(sub, lines, "subscription_cycle")
            if invoice["status"] == "open":
                self.pay_invoice(
                    invoice["id"],
                    (sub["_payment_method"] or "pm_card_visa") if pay else "pm_card_chargeDeclined",
                )
            return sub
