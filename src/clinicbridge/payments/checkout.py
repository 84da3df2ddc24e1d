"""Pay at booking: hold the slot, create the PaymentIntent (or a Checkout Session for a
link by SMS or voice), confirm the booking when Stripe says it was paid.

The order keeps SQLite's single writer free while Stripe is called, and leaves
nothing a crash cannot finish:

1. one transaction: the booking as ``pending_payment`` (a hold that expires like
   ``held``), the ``payments`` row as ``creating`` with its idempotency key
   ``cb:{payment_id}:pi:v1``, and a reconcile job due in two minutes; committed;
2. the Stripe call, with no transaction open;
3. a short transaction records the intent's (or session's) id.

A crash between 1 and 3 leaves a ``creating`` payment: the reconcile job (or the
client calling ``POST /bookings/{id}/payment``) repeats the call with the same key, and
Stripe answers the object it already made. Stripe down (breaker open, 5xx, timeout):
the booking stays held and the API answers 503 ``payment-provider-unavailable`` naming
the booking and how to retry; nothing is charged twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.payments import ledger, lifecycle, stripe_api, stripe_connect
from clinicbridge.payments.config import billing_settings
from clinicbridge.payments.errors import PaymentProviderUnavailableError, StripeRefusedError
from clinicbridge.payments.models import OPEN_PAYMENT_STATUSES, Payment
from clinicbridge.scheduling.bookings import BookingStateError, get_booking
from clinicbridge.scheduling.models import Booking, Service
from clinicbridge.settings import Settings

log = logging.getLogger("clinicbridge.payments")

PAYMENT_CHOICES = ("none", "deposit", "full")
METHODS = ("card", "link")
# What the patient sees on the Checkout page, by the payment's purpose.
LINE_NAMES = {
    "deposit": "Deposit",
    "full": "Appointment",
    "invoice": "Invoice",
    "balance": "Account balance",
}


@dataclass(frozen=True)
class Started:
    """What the client needs to pay: Stripe.js gets ``client_secret``, a patient on the
    phone or by SMS gets ``checkout_url``."""

    payment: Payment
    client_secret: str | None
    checkout_url: str | None


def hold_minutes(session: Session, tenant_id: str, method: str) -> int:
    cfg = billing_settings(session, tenant_id)
    return cfg.link_hold_minutes if method == "link" else cfg.card_hold_minutes


def amount_for(session: Session, ctx: Ctx, service_id: str, payment: str) -> tuple[int, str]:
    """What ``payment`` ("deposit" or "full") asks for this service, in the clinic's
    currency; InvalidInputError on ``payment`` when the service has no such amount."""
    service = session.scalars(
        scoped_select(Service, ctx.tenant_id).where(Service.id == service_id)
    ).first()
    if service is None:
        raise InvalidInputError.one("service_id", "no such service", "not_found")
    amount = service.deposit_minor if payment == "deposit" else service.price_minor
    if not amount:
        what = "a deposit (deposit_minor)" if payment == "deposit" else "a price"
        raise InvalidInputError.one("payment", f"this service has no {what}", "no_amount")
    currency = ledger.clinic_currency(session, ctx.tenant_id)
    if (service.currency or "").lower() != currency:
        raise InvalidInputError.one(
            "payment", "this service is priced in another currency than the clinic's", "currency"
        )
    return amount, currency


def open_booking_payment(
    session: Session, ctx: Ctx, booking: Booking, *, payment: str, method: str
) -> Payment:
    """Step 1 (in the booking's transaction): the ``creating`` payment of a new
    ``pending_payment`` booking."""
    if method not in METHODS:
        raise InvalidInputError.one("payment_method", f"must be one of {', '.join(METHODS)}")
    integration = stripe_api.stripe_integration(session, ctx.tenant_id)
    if integration is None:
        raise InvalidInputError.one(
            "payment", "the clinic has no enabled Stripe integration", "no_provider"
        )
    amount, currency = amount_for(session, ctx, booking.service_id, payment)
    return lifecycle.new_payment(
        session,
        ctx,
        patient_id=booking.patient_id,
        integration_id=integration.id,
        amount=amount,
        currency=currency,
        purpose=payment,
        method=method,
        booking_id=booking.id,
        expires_at=booking.hold_expires_at,
    )


def start(
    db: Database, settings: Settings, tenant_id: str, payment_id: str, now: datetime
) -> Started:
    """Steps 2 and 3: create (or find again) the Stripe object of a payment. Call it
    with no transaction open. Raises PaymentProviderUnavailableError when Stripe
    cannot be reached (the payment stays ``creating``; retrying is safe)."""
    with db.read() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.tenant_id != tenant_id:
            raise NotFoundError("No such payment.")
        session.expunge(payment)
        integration = (
            stripe_api.stripe_integration(session, tenant_id) if payment.integration_id else None
        )
        if integration is None or integration.id != payment.integration_id:
            raise InvalidInputError.one(
                "payment", "the payment's Stripe integration is gone or disabled", "no_provider"
            )
        acct = stripe_api.account(db, settings, integration)
    extra = {"payment_id": payment.id, "booking_id": payment.booking_id}
    if payment.booking_id:
        extra["retry"] = f"POST /api/v1/bookings/{payment.booking_id}/payment"
    try:
        return _call_stripe(db, settings, acct, payment, now)
    except PaymentProviderUnavailableError as exc:
        exc.extra.update(extra)
        exc.detail = (
            "Stripe is not reachable right now; the slot stays held. Retry the payment "
            "shortly; it will not be charged twice."
        )
        raise


def _call_stripe(
    db: Database, settings: Settings, acct: stripe_api.Account, payment: Payment, now: datetime
) -> Started:
    metadata = {
        "payment_id": payment.id,
        "tenant_id": payment.tenant_id,
        "booking_id": payment.booking_id or "",
        "invoice_id": payment.invoice_id or "",
    }
    if payment.method == "link":
        base = settings.public_base_url
        expires = payment.expires_at or now + timedelta(minutes=30)
        made = stripe_api.create_checkout_session(
            acct,
            amount=payment.amount,
            currency=payment.currency,
            name=LINE_NAMES.get(payment.purpose, "Appointment"),
            metadata=metadata,
            success_url=f"{base}/pay/done?payment={payment.id}",
            cancel_url=f"{base}/pay/cancelled?payment={payment.id}",
            expires_at=max(expires, now + timedelta(minutes=30, seconds=5)),
            idempotency_key=payment.idempotency_key,
        )
        with db.write() as session:
            row = session.get(Payment, payment.id, with_for_update=True)
            assert row is not None
            lifecycle.recorded(
                session,
                row,
                intent_id=made.payment_intent,
                session_id=made.id,
                checkout_url=made.url,
                stripe_status=f"session_{made.status}",
                now=now,
            )
            session.flush()  # expunging unflushed changes would drop them
            session.expunge(row)
        if row.status == "canceled":
            _expire_late_session(acct, row.id, made.id)
        return Started(row, None, made.url)
    create = (  # a card presented at the front desk's reader, captured by the clinic
        stripe_connect.create_card_present_intent
        if payment.method == "card_present"
        else stripe_api.create_payment_intent
    )
    intent = create(
        acct,
        amount=payment.amount,
        currency=payment.currency,
        metadata=metadata,
        description=f"ClinicBridge payment {payment.id}",
        idempotency_key=payment.idempotency_key,
    )
    with db.write() as session:
        row = session.get(Payment, payment.id, with_for_update=True)
        assert row is not None
        lifecycle.recorded(
            session,
            row,
            intent_id=intent.id,
            session_id=None,
            checkout_url=None,
            stripe_status=intent.status,
            now=now,
        )
        if intent.status != "requires_payment_method":  # paid meanwhile (a retry after success)
            lifecycle.apply(session, row, lifecycle.Observed.of_intent(_as_obj(intent)), now)
        session.flush()  # expunging unflushed changes would drop them
        session.expunge(row)
    return Started(row, intent.client_secret, None)


def _expire_late_session(acct: stripe_api.Account, payment_id: str, session_id: str) -> None:
    """The payment was cancelled (superseded) while its page was being made: close the
    page too. Its link is never sent (``links.send_link`` checks first), so a failure
    here leaves a page nobody has, which Stripe closes at its expiry."""
    try:
        stripe_api.expire_checkout_session(
            acct, session_id, idempotency_key=f"cb:{payment_id}:cancel:late"
        )
    except (StripeRefusedError, PaymentProviderUnavailableError):
        log.warning("late payment page not expired", extra={"fields": {"payment_id": payment_id}})


def _as_obj(intent: stripe_api.Intent) -> dict[str, object]:
    return {
        "id": intent.id,
        "status": intent.status,
        "amount_received": intent.amount_received,
        "latest_charge": intent.latest_charge,
    }


def payable(session: Session, ctx: Ctx, booking_id: str) -> Payment:
    """The open payment of a ``pending_payment`` booking, to (re)start; a booking that
    is cancelled, expired or no longer waiting for a payment is a 409."""
    booking = get_booking(session, ctx, booking_id)
    if booking.status != "pending_payment":
        raise BookingStateError(f"A {booking.status} booking cannot be paid.".replace("_", "-"))
    if booking.hold_expires_at is not None and booking.hold_expires_at <= ctx.now:
        raise BookingStateError("This hold has expired and its slot was released; book again.")
    payment = session.scalars(
        scoped_select(Payment, ctx.tenant_id)
        .where(Payment.booking_id == booking.id, Payment.status.in_(OPEN_PAYMENT_STATUSES))
        .order_by(Payment.created_at.desc())
        .limit(1)
    ).first()
    if payment is None:
        raise BookingStateError("This booking has no open payment.")
    return payment
