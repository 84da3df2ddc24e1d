"""A payment's state, and what reaching a state sets off.

Stripe's events may come twice, late, or in any order (``succeeded`` before
``created``, a stale ``payment_failed`` after ``succeeded``). So the state is taken
from the *object* an event carries, never from the event's arrival, and states only
move forward by rank; the terminal ones (``succeeded``, ``canceled``) never change:

    creating < requires_payment < failed < processing < succeeded | canceled

(``failed`` is a payment attempt that failed; Stripe lets the patient try again on the
same intent, so ``processing`` or ``succeeded`` may still follow.)

What each state sets off, in the same transaction as the state change, once:

* ``succeeded``: a ``payment`` ledger entry (source key ``payment:{id}:succeeded``, the
  same whichever event or job gets there first), the booking confirmed (or, if its
  hold was already released, ``attention = booking_released`` for staff), linked
  invoices settled, ``payment.succeeded`` published, the receipt job enqueued;
* ``failed``: ``payment.failed`` published, the booking's hold released, the intent
  cancelled at Stripe by a job (so the patient cannot pay for a slot that is gone);
* ``canceled``: the booking's hold released.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.jobs import queue
from clinicbridge.payments import events, invoices, ledger
from clinicbridge.payments.models import Invoice, Payment
from clinicbridge.scheduling.bookings import BookingStateError, confirm_booking, release_hold
from clinicbridge.scheduling.models import Booking

log = logging.getLogger("clinicbridge.payments")

RESOURCE = "payment"
RECEIPT_KIND = "payments.receipt"
CANCEL_KIND = "payments.cancel_at_stripe"
RECONCILE_KIND = "payments.reconcile"
RECONCILE_AFTER = timedelta(minutes=2)  # a payment still "creating" then: its request died
ACTOR = "stripe"

_RANK = {
    "creating": 0,
    "requires_payment": 1,
    "failed": 2,
    "processing": 3,
    "succeeded": 9,
    "canceled": 9,
}
TERMINAL = frozenset({"succeeded", "canceled"})
_DESCRIPTIONS = {
    "card": "Card payment",
    "link": "Payment by link",
    "card_present": "Card payment at the front desk",
}
# Stripe's PaymentIntent statuses → ours.
_FROM_STRIPE = {
    "requires_payment_method": "requires_payment",
    "requires_confirmation": "requires_payment",
    "requires_action": "requires_payment",
    "processing": "processing",
    "requires_capture": "processing",
    "succeeded": "succeeded",
    "canceled": "canceled",
}


@dataclass(frozen=True)
class Observed:
    """What Stripe says about a payment now (from an intent or a checkout session)."""

    status: str  # ours
    stripe_status: str
    amount_received: int = 0
    intent_id: str | None = None
    charge_id: str | None = None
    failure_code: str | None = None

    @classmethod
    def of_intent(cls, obj: Mapping[str, Any], *, failed: bool = False) -> Observed:
        """From a PaymentIntent; ``failed``: the event was ``payment_intent.payment_failed``."""
        stripe_status = str(obj.get("status"))
        status = _FROM_STRIPE.get(stripe_status, "requires_payment")
        error = obj.get("last_payment_error") or {}
        if failed and status == "requires_payment":
            status = "failed"
        charge = obj.get("latest_charge")
        return cls(
            status=status,
            stripe_status=stripe_status,
            amount_received=int(obj.get("amount_received") or 0),
            intent_id=str(obj["id"]),
            charge_id=charge.get("id") if isinstance(charge, dict) else charge,
            failure_code=(error.get("decline_code") or error.get("code")) if error else None,
        )

    @classmethod
    def of_session(cls, obj: Mapping[str, Any]) -> Observed:
        intent = obj.get("payment_intent")
        intent_id = intent.get("id") if isinstance(intent, dict) else intent
        if obj.get("payment_status") in ("paid", "no_payment_required"):
            return cls("succeeded", "session_paid", int(obj.get("amount_total") or 0), intent_id)
        if obj.get("status") == "expired":
            return cls("canceled", "session_expired", 0, intent_id)
        return cls("requires_payment", f"session_{obj.get('status')}", 0, intent_id)


def find_payment(
    session: Session,
    tenant_id: str,
    *,
    intent_id: str | None = None,
    session_id: str | None = None,
    payment_id: str | None = None,
) -> Payment | None:
    """Our payment for a Stripe object, by its ids or our id in its metadata (this
    clinic's only: a signed event of one clinic never reaches another's payment)."""
    # One indexed lookup at a time: Stripe's own ids first (they are what the event is
    # about), our id from the metadata only for an object we have not recorded yet.
    for column, value in (
        (Payment.stripe_payment_intent_id, intent_id),
        (Payment.stripe_checkout_session_id, session_id),
        (Payment.id, payment_id),
    ):
        if not value:
            continue
        found = session.scalars(
            sa.select(Payment)
            .where(Payment.tenant_id == tenant_id, column == value)
            .limit(1)
            .with_for_update()
        ).first()
        if found is not None:
            return found
    return None


def new_payment(
    session: Session,
    ctx: Ctx,
    *,
    patient_id: str,
    integration_id: str,
    amount: int,
    currency: str,
    purpose: str,
    method: str,
    booking_id: str | None = None,
    invoice_id: str | None = None,
    expires_at: datetime | None = None,
) -> Payment:
    """A payment about to be created at Stripe (``creating``), committed before the
    call; the reconcile job enqueued with it finishes the work if the request dies."""
    payment_id = new_id("pay")
    kind = "cs" if method == "link" else "pi"
    payment = Payment(
        id=payment_id,
        tenant_id=ctx.tenant_id,
        patient_id=patient_id,
        booking_id=booking_id,
        invoice_id=invoice_id,
        integration_id=integration_id,
        purpose=purpose,
        method=method,
        amount=amount,
        currency=currency.lower(),
        status="creating",
        amount_received=0,
        amount_refunded=0,
        disputed=False,
        expires_at=expires_at,
        idempotency_key=f"cb:{payment_id}:{kind}:v1",
        created_by=f"{ctx.actor_type}:{ctx.actor_id}",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(payment)
    session.flush()
    record(
        session,
        ctx,
        "payment.create",
        RESOURCE,
        payment.id,
        diff={
            "amount": amount,
            "currency": payment.currency,
            "purpose": purpose,
            "method": method,
            "booking_id": booking_id,
            "invoice_id": invoice_id,
        },
    )
    queue.enqueue(
        session,
        RECONCILE_KIND,
        {"payment_id": payment.id},
        now=ctx.now,
        tenant_id=ctx.tenant_id,
        run_at=ctx.now + RECONCILE_AFTER,
        dedupe_key=f"{RECONCILE_KIND}:{payment.id}",
    )
    return payment


def apply(session: Session, payment: Payment, seen: Observed, now: datetime) -> bool:
    """Move ``payment`` to what Stripe says, if that is forward; True if it moved."""
    if seen.intent_id and not payment.stripe_payment_intent_id:
        payment.stripe_payment_intent_id = seen.intent_id
    if seen.charge_id and seen.status == "succeeded":
        payment.stripe_charge_id = seen.charge_id
    current = payment.status
    if current in TERMINAL or _RANK[seen.status] <= _RANK[current]:
        return False  # backwards, or the same state again (a duplicate): nothing to do
    ctx = Ctx.system(payment.tenant_id, ACTOR, now)
    payment.status, payment.stripe_status, payment.updated_at = seen.status, seen.stripe_status, now
    if seen.status == "failed":
        payment.failure_code = seen.failure_code
        payment.failure_message = "The payment did not go through" + (
            f" ({seen.failure_code})." if seen.failure_code else "."
        )
    session.flush()
    record(
        session,
        ctx,
        f"payment.{seen.status}",
        RESOURCE,
        payment.id,
        diff={"status": [current, seen.status]},
    )
    if seen.status == "succeeded":
        _succeeded(session, ctx, payment, seen)
    elif seen.status == "failed":
        _failed(session, ctx, payment)
    elif seen.status == "canceled":
        _release(session, ctx, payment, "the payment was cancelled")
    return True


def _succeeded(session: Session, ctx: Ctx, payment: Payment, seen: Observed) -> None:
    received = seen.amount_received or payment.amount
    payment.amount_received, payment.succeeded_at = received, ctx.now
    payment.failure_code = payment.failure_message = None
    ledger.post(
        session,
        ledger.Posting(
            payment.tenant_id,
            payment.patient_id,
            "payment",
            -received,
            payment.currency,
            f"payment:{payment.id}:succeeded",
            _DESCRIPTIONS.get(payment.method, "Payment"),
            ctx.now,
            invoice_id=payment.invoice_id,
            payment_id=payment.id,
            booking_id=payment.booking_id,
        ),
        by=f"system:{ACTOR}",
        now=ctx.now,
    )
    if payment.booking_id is not None:
        try:
            confirm_booking(session, ctx, payment.booking_id)  # locks it; twice is no change
            confirmed = True
        except (BookingStateError, NotFoundError):
            # released (hold ran out, cancelled) before the payment landed; a visit that
            # already took place (paid at the desk afterwards) is no cause for attention
            booking = session.get(Booking, payment.booking_id)
            confirmed = booking is not None and booking.status in ("completed", "no_show")
        if not confirmed:
            payment.attention = "booking_released"
            log.warning(
                "payment succeeded for a released booking",
                extra={"fields": {"payment_id": payment.id}},
            )
    if payment.invoice_id is not None:
        invoice = session.get(Invoice, payment.invoice_id, with_for_update=True)
        if invoice is not None:
            invoices.settle(session, ctx, invoice)
    events.emit(
        session, payment.tenant_id, "payment.succeeded", events.payment_data(payment), ctx.now
    )
    queue.enqueue(
        session,
        RECEIPT_KIND,
        {"payment_id": payment.id},
        now=ctx.now,
        tenant_id=payment.tenant_id,
        dedupe_key=f"{RECEIPT_KIND}:{payment.id}",
    )


def _failed(session: Session, ctx: Ctx, payment: Payment) -> None:
    events.emit(session, payment.tenant_id, "payment.failed", events.payment_data(payment), ctx.now)
    _release(session, ctx, payment, "the payment failed")
    cancel_at_stripe_later(session, payment, ctx.now)


def _release(session: Session, ctx: Ctx, payment: Payment, reason: str) -> None:
    if payment.booking_id is not None:
        release_hold(session, ctx, payment.booking_id, reason=reason)


def cancel_at_stripe_later(session: Session, payment: Payment, now: datetime) -> None:
    queue.enqueue(
        session,
        CANCEL_KIND,
        {"payment_id": payment.id},
        now=now,
        tenant_id=payment.tenant_id,
        dedupe_key=f"{CANCEL_KIND}:{payment.id}",
    )


def recorded(
    session: Session,
    payment: Payment,
    *,
    intent_id: str | None,
    session_id: str | None,
    checkout_url: str | None,
    stripe_status: str,
    now: datetime,
) -> None:
    """The Stripe object now exists: remember its ids (``creating`` → ``requires_payment``)."""
    payment.stripe_payment_intent_id = payment.stripe_payment_intent_id or intent_id
    payment.stripe_checkout_session_id = payment.stripe_checkout_session_id or session_id
    payment.checkout_url = payment.checkout_url or checkout_url
    if payment.status == "creating":
        payment.status, payment.stripe_status, payment.updated_at = (
            "requires_payment",
            stripe_status,
            now,
        )
    session.flush()
