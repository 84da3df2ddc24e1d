"""Payment links: a Stripe Checkout page sent to the patient by SMS or e-mail (message
kind ``payment.link``), for what an open invoice still asks, the patient's open
balance, or a booking held for its payment. Card numbers never pass through us.

Like pay at booking, the payment row (``creating``, method ``link``) is committed
first, in the caller's transaction, together with the ``payments.send_link`` job; the
job then creates the Checkout Session with no transaction open (``checkout.start``,
same idempotency key on every try) and queues the message (one per payment and
channel, even if the job runs twice). Stripe down: the job retries; nothing is sent
twice and nothing is charged twice. Asking again for the same amount while a link is
still open reuses that payment instead of opening a second one.

A new link for another amount supersedes the open links it overlaps, so the patient
cannot pay the same money twice: a balance link supersedes the patient's other balance
and invoice links, an invoice link that invoice's other links and the balance links.
Each is expired at Stripe by the cancel job (``lifecycle.cancel_at_stripe_later``), and
turns ``canceled`` only once Stripe has expired it; one paid meanwhile stays paid.
Links of a held booking are left alone (the hold ends them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.models import Tenant
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.jobs import queue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.service import integration_for, opted_out, queue_message, recipient
from clinicbridge.messaging.variables import payment_link_variables
from clinicbridge.patients.models import Patient
from clinicbridge.payments import checkout, invoices, ledger, lifecycle, stripe_api
from clinicbridge.payments.errors import InvoiceStateError, PaymentStateError
from clinicbridge.payments.models import Invoice, Payment

log = logging.getLogger("clinicbridge.payments")

SEND_KIND = "payments.send_link"
MESSAGE_KIND = "payment.link"
CHANNELS = ("sms", "email")
# Stripe keeps a Checkout Session open at most 24 hours from its creation.
LINK_LIFETIME = timedelta(hours=23)
REUSE_MARGIN = timedelta(minutes=30)  # an open link closer to its end than this is not reused


@dataclass(frozen=True)
class Route:
    """Where a link can go: the channel and the patient's address on it."""

    channel: str
    address: str


def _integration_id(session: Session, ctx: Ctx, field: str) -> str:
    integration = stripe_api.stripe_integration(session, ctx.tenant_id)
    if integration is None:
        raise InvalidInputError.one(field, "the clinic has no enabled Stripe integration")
    return integration.id


def _reusable(
    session: Session, ctx: Ctx, patient_id: str, purpose: str, amount: int, invoice_id: str | None
) -> Payment | None:
    return session.scalars(
        scoped_select(Payment, ctx.tenant_id)
        .where(
            Payment.patient_id == patient_id,
            Payment.purpose == purpose,
            Payment.method == "link",
            Payment.amount == amount,
            (Payment.invoice_id == invoice_id) if invoice_id else Payment.invoice_id.is_(None),
            Payment.status.in_(("creating", "requires_payment")),
            Payment.expires_at > ctx.now + REUSE_MARGIN,
        )
        .order_by(Payment.created_at.desc())
        .limit(1)
    ).first()


def _lock_patient(session: Session, patient_id: str) -> None:
    """Two link requests for one patient at once: one waits, then sees the other's."""
    session.execute(sa.select(Patient.id).where(Patient.id == patient_id).with_for_update())


def _supersede(session: Session, ctx: Ctx, made: Payment) -> None:
    """Expire the patient's open links that ``made`` overlaps (see the module doc)."""
    overlapping = (
        Payment.purpose.in_(("balance", "invoice"))
        if made.purpose == "balance"
        else sa.or_(Payment.purpose == "balance", Payment.invoice_id == made.invoice_id)
    )
    older = session.scalars(
        scoped_select(Payment, ctx.tenant_id).where(
            Payment.patient_id == made.patient_id,
            Payment.method == "link",
            Payment.id != made.id,
            Payment.status.in_(("creating", "requires_payment")),
            overlapping,
        )
    ).all()
    for payment in older:
        record(
            session, ctx, "payment.link_superseded", "payment", payment.id,
            diff={"superseded_by": made.id},
        )  # fmt: skip
        lifecycle.cancel_at_stripe_later(session, payment, ctx.now)


def invoice_payment(
    session: Session,
    ctx: Ctx,
    invoice_id: str,
    *,
    method: str,
    expires_at: datetime | None,
    reuse: bool = False,
) -> Payment:
    """A payment of what an open invoice still asks for (``POST /invoices/{id}/pay`` and
    the voice receptionist). 409 when the invoice is not open or nothing is due."""
    patient_id = session.scalar(
        scoped_select(Invoice, ctx.tenant_id).with_only_columns(Invoice.patient_id)
        .where(Invoice.id == invoice_id)
    )  # fmt: skip
    if patient_id is not None:
        _lock_patient(session, patient_id)  # the patient first, then the invoice: always
    invoice = invoices.get_invoice(session, ctx, invoice_id, lock=True)
    if invoice.status != "open":
        raise InvoiceStateError(f"A {invoice.status} invoice cannot be paid.")
    due = invoices.due_of(session, invoice)
    if due <= 0:
        raise InvoiceStateError("Nothing is due on this invoice.")
    if reuse and method == "link":
        found = _reusable(session, ctx, invoice.patient_id, "invoice", due, invoice.id)
        if found is not None:
            return found
    integration_id = _integration_id(session, ctx, "payment_method")
    made = lifecycle.new_payment(
        session,
        ctx,
        patient_id=invoice.patient_id,
        integration_id=integration_id,
        amount=due,
        currency=invoice.currency,
        purpose="invoice",
        method=method,
        invoice_id=invoice.id,
        expires_at=expires_at,
    )
    if method == "link":
        _supersede(session, ctx, made)
    return made


def balance_payment(session: Session, ctx: Ctx, patient_id: str) -> Payment:
    """A link payment of the patient's whole open balance (the read is audited); 409
    when nothing is owed. When one open invoice asks for exactly the balance, the
    payment is for that invoice, so that paying it settles the invoice too."""
    _lock_patient(session, patient_id)
    owed, currency = ledger.patient_balance(session, ctx, patient_id, purpose="payment_link")
    if owed <= 0:
        raise PaymentStateError("Nothing is owed on this account.")
    open_invoices = session.scalars(
        scoped_select(Invoice, ctx.tenant_id)
        .where(Invoice.patient_id == patient_id, Invoice.status == "open")
        .order_by(Invoice.id)
    ).all()
    matching = [i for i in open_invoices if invoices.due_of(session, i) == owed]
    if len(matching) == 1 and matching[0].currency == currency:
        return invoice_payment(
            session,
            ctx,
            matching[0].id,
            method="link",
            expires_at=ctx.now + LINK_LIFETIME,
            reuse=True,
        )
    found = _reusable(session, ctx, patient_id, "balance", owed, None)
    if found is not None:
        return found
    made = lifecycle.new_payment(
        session,
        ctx,
        patient_id=patient_id,
        integration_id=_integration_id(session, ctx, "patient_id"),
        amount=owed,
        currency=currency,
        purpose="balance",
        method="link",
        expires_at=ctx.now + LINK_LIFETIME,
    )
    _supersede(session, ctx, made)
    return made


def open_invoice_of(session: Session, ctx: Ctx, patient_id: str, number: str) -> Invoice | None:
    """The patient's invoice with this number (as said on the phone: any case)."""
    return session.scalars(
        scoped_select(Invoice, ctx.tenant_id).where(
            Invoice.patient_id == patient_id,
            sa.func.upper(Invoice.number) == number.strip().upper(),
        )
    ).first()


def booking_payment(session: Session, ctx: Ctx, booking_id: str) -> Payment:
    """The open link payment of a booking held for its payment; 409 otherwise (a card
    payment is completed in the clinic's own page, not by a link)."""
    payment = checkout.payable(session, ctx, booking_id)
    if payment.method != "link":
        raise PaymentStateError("This booking's payment is taken by card on the booking page.")
    return payment


def routes(session: Session, tenant_id: str, patient_id: str) -> list[Route]:
    """The channels a link can reach this patient on, SMS first: an address on file,
    a clinic integration that sends it, and no opt-out."""
    found = []
    for channel in CHANNELS:
        address = recipient(session, tenant_id, patient_id, channel)
        if address is None or integration_for(session, tenant_id, channel) is None:
            continue
        if not opted_out(session, tenant_id, patient_id, channel):
            found.append(Route(channel, address))
    return found


def send_later(session: Session, ctx: Ctx, payment: Payment, channel: str) -> None:
    """In the caller's transaction: the job that makes the page and sends its link."""
    if channel not in CHANNELS:
        raise InvalidInputError.one("channel", f"must be one of {', '.join(CHANNELS)}")
    queue.enqueue(
        session,
        SEND_KIND,
        {"payment_id": payment.id, "channel": channel},
        now=ctx.now,
        tenant_id=ctx.tenant_id,
        dedupe_key=f"{SEND_KIND}:{payment.id}:{channel}",
    )


@registry.handler(SEND_KIND, max_attempts=8)
def send_link(job: JobContext) -> None:
    payment_id, channel = str(job.payload["payment_id"]), str(job.payload["channel"])
    with job.db.read() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status not in ("creating", "requires_payment"):
            return  # paid, cancelled or expired meanwhile: no link to send
        url = payment.checkout_url
    if url is None:
        if job.settings is None:
            raise RuntimeError("payment links need the service settings (master key file)")
        started = checkout.start(job.db, job.settings, payment.tenant_id, payment_id, job.now())
        url = started.checkout_url
    assert url is not None
    with job.db.write() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status not in ("creating", "requires_payment"):
            return
        tenant = session.get(Tenant, payment.tenant_id)
        patient = session.get(Patient, payment.patient_id)
        assert tenant is not None and patient is not None
        variables = payment_link_variables(
            language=patient.preferred_language,
            clinic_default_language=tenant.default_language,
            clinic_name=tenant.name,
            clinic_phone="",
            patient_first_name=patient.first_name,
            amount_minor=payment.amount,
            currency=payment.currency,
            pay_url=url,
        )
        try:
            queue_message(
                session,
                Ctx.system(tenant.id, "payment_links", job.now()),
                patient_id=patient.id,
                channel=channel,
                template=MESSAGE_KIND,
                variables=variables,
                booking_id=payment.booking_id,
                dedupe_key=f"payment:{payment.id}:link:{channel}",
            )
        except InvalidInputError:
            # The address or the clinic's channel went away since the link was asked for:
            # retrying cannot help; the payment stays open for staff to resend.
            log.warning("payment link not sent", extra={"fields": {"payment_id": payment.id}})
