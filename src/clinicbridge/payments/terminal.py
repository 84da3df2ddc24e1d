"""Card payments at the front desk (Stripe Terminal, server side).

* a connection token for the desk's Terminal SDK (``POST /v1/terminal/connection_tokens``,
  optionally for one Terminal location);
* a card-present payment: a ``payments`` row of method ``card_present`` (purpose
  ``invoice`` with an invoice, else ``in_person``), created as every payment is
  (``lifecycle.new_payment`` then ``checkout.start``: same idempotency key, same
  reconcile job), whose PaymentIntent has ``payment_method_types[]=card_present`` and
  ``capture_method=manual``; the reader collects the card with its ``client_secret``;
* capture (``POST /v1/payment_intents/{id}/capture``) once the card was presented:
  the intent is then ``succeeded`` and the payment moves on exactly as a web payment
  does (``lifecycle.apply``: ledger entry, invoice settled, receipt); the
  ``payment_intent.succeeded`` webhook that follows converges on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.integrations.registry import integrations
from clinicbridge.patients.models import Patient
from clinicbridge.payments import checkout, invoices, ledger, lifecycle, stripe_api, stripe_connect
from clinicbridge.payments.errors import PaymentStateError, StripeRefusedError
from clinicbridge.payments.models import Payment
from clinicbridge.payments.stripe_events import on_intent
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings

METHOD = "card_present"
MAX_AMOUNT = 10**9


@dataclass(frozen=True)
class ConnectionToken:
    secret: str
    location: str | None


def connection_token(
    db: Database, settings: Settings, ctx: Ctx, location: str | None
) -> ConnectionToken:
    with db.read() as session:
        integration = stripe_api.stripe_integration(session, ctx.tenant_id)
        if integration is None:
            raise InvalidInputError.one(
                "location", "the clinic has no enabled Stripe integration", "no_provider"
            )
        acct = stripe_api.account(db, settings, integration)
    secret, found = stripe_connect.create_connection_token(
        acct, location=location, idempotency_key=f"cb:{ctx.tenant_id}:cst:{new_id('cst')}"
    )
    return ConnectionToken(secret, found if isinstance(found, str) else location)


def open_payment(
    session: Session,
    ctx: Ctx,
    *,
    patient_id: str,
    amount: int,
    booking_id: str | None,
    invoice_id: str | None,
) -> Payment:
    """The ``creating`` card-present payment (committed before Stripe is called)."""
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidInputError.one("amount", "must be a positive amount in minor units", "range")
    patient = session.scalars(
        scoped_select(Patient, ctx.tenant_id).where(Patient.id == patient_id)
    ).first()
    if patient is None:
        raise InvalidInputError.one("patient_id", "no such patient", "not_found")
    currency = ledger.clinic_currency(session, ctx.tenant_id)
    if booking_id is not None:
        booking = session.scalars(
            scoped_select(Booking, ctx.tenant_id).where(Booking.id == booking_id)
        ).first()
        if booking is None or booking.patient_id != patient_id:
            raise InvalidInputError.one(
                "booking_id", "no such booking of this patient", "not_found"
            )
        if booking.status in ("cancelled", "expired"):
            raise InvalidInputError.one("booking_id", f"the booking is {booking.status}", "state")
    if invoice_id is not None:
        try:
            invoice = invoices.get_invoice(session, ctx, invoice_id)
        except NotFoundError:
            invoice = None
        if invoice is None or invoice.patient_id != patient_id:
            raise InvalidInputError.one(
                "invoice_id", "no such invoice of this patient", "not_found"
            )
        if invoice.status != "open":
            raise InvalidInputError.one("invoice_id", f"the invoice is {invoice.status}", "state")
        currency = invoice.currency
    integration = stripe_api.stripe_integration(session, ctx.tenant_id)
    if integration is None:
        raise InvalidInputError.one(
            "amount", "the clinic has no enabled Stripe integration", "no_provider"
        )
    return lifecycle.new_payment(
        session,
        ctx,
        patient_id=patient_id,
        integration_id=integration.id,
        amount=amount,
        currency=currency,
        purpose="invoice" if invoice_id else "in_person",
        method=METHOD,
        booking_id=booking_id,
        invoice_id=invoice_id,
    )


def start(db: Database, settings: Settings, ctx: Ctx, payment_id: str) -> checkout.Started:
    """Create the card-present PaymentIntent (``checkout.start`` knows the method)."""
    return checkout.start(db, settings, ctx.tenant_id, payment_id, ctx.now)


def capture(db: Database, settings: Settings, ctx: Ctx, payment_id: str) -> Payment:
    """Capture a presented card. 404 for another clinic's payment; 409 for a payment
    that is not card-present, already finished, or whose card was never presented."""
    with db.read() as session:
        payment = session.scalars(
            scoped_select(Payment, ctx.tenant_id).where(Payment.id == payment_id)
        ).first()
        if payment is None:
            raise NotFoundError("No such payment.")
        if payment.method != METHOD:
            raise PaymentStateError("Only a card-present payment is captured at the desk.")
        if payment.status in lifecycle.TERMINAL or not payment.stripe_payment_intent_id:
            raise PaymentStateError(f"A {payment.status} payment cannot be captured.")
        intent_id = payment.stripe_payment_intent_id
        integration = stripe_api.stripe_integration(session, ctx.tenant_id)
        if integration is None or integration.id != payment.integration_id:
            raise PaymentStateError("The payment's Stripe integration is gone or disabled.")
        acct = stripe_api.account(db, settings, integration)
    # Asked first: Stripe keeps a refused request's answer under its idempotency key, so
    # a capture tried before the card was presented must not spend the key. The key
    # names the charge: one capture per presented card, however often staff click.
    current = stripe_api.retrieve_payment_intent(acct, intent_id)
    refused = PaymentStateError(
        "This payment cannot be captured: no card was presented, or it was captured or "
        "cancelled already."
    )
    if current.status != "requires_capture" or not current.latest_charge:
        raise refused
    try:
        intent = stripe_connect.capture_payment_intent(
            acct, intent_id, idempotency_key=f"cb:{payment_id}:capture:{current.latest_charge}"
        )
    except StripeRefusedError as exc:
        if exc.code == "payment_intent_unexpected_state":
            raise refused from exc
        raise
    seen = lifecycle.Observed.of_intent(
        {
            "id": intent.id,
            "status": intent.status,
            "amount_received": intent.amount_received,
            "latest_charge": intent.latest_charge,
        }
    )
    with db.write() as session:
        row = session.get(Payment, payment_id, with_for_update=True)
        assert row is not None
        record(
            session,
            ctx,
            "payment.capture",
            lifecycle.RESOURCE,
            row.id,
            diff={"amount": intent.amount_received},
        )
        lifecycle.apply(session, row, seen, ctx.now)
        session.flush()
        session.expunge(row)
    return row


# The card was presented (``requires_capture``): the payment shows ``processing``.
integrations.on("stripe", "payment_intent.amount_capturable_updated")(on_intent)
