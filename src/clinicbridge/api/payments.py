"""``/api/v1/payments``: payments made through Stripe, their receipts, unmatched Stripe
events; and ``POST /invoices/{id}/pay`` to take what an invoice still asks for."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.pagination import paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.payments import checkout, links, receipts
from clinicbridge.payments.models import Payment, UnmatchedStripeEvent
from clinicbridge.payments.schemas import (
    BookingPaymentOut,
    PayIn,
    PaymentOut,
    UnmatchedOut,
)

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Writer = Annotated[Ctx, require("billing:write")]
PaymentId = Annotated[str, Path(max_length=64)]


@router.get("/payments", response_model=ListOut[PaymentOut])
def list_payments(
    db: DB,
    ctx: Reader,
    page: Paging,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    booking_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=24)] = None,
) -> ListOut[PaymentOut]:
    with db.read() as session:
        stmt = scoped_select(Payment, ctx.tenant_id)
        for column, value in (
            (Payment.patient_id, patient_id),
            (Payment.booking_id, booking_id),
            (Payment.status, status),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        found = paginate(session, stmt, Payment.id, page.limit, page.starting_after)
        return ListOut.of(found, PaymentOut.model_validate)


@router.get("/payments/unmatched", response_model=ListOut[UnmatchedOut])
def list_unmatched(db: DB, ctx: Reader, page: Paging) -> ListOut[UnmatchedOut]:
    """Verified Stripe events about objects ClinicBridge does not know: kept for staff."""
    with db.read() as session:
        stmt = scoped_select(UnmatchedStripeEvent, ctx.tenant_id)
        found = paginate(session, stmt, UnmatchedStripeEvent.id, page.limit, page.starting_after)
        return ListOut.of(found, UnmatchedOut.model_validate)


def _payment(session: Session, ctx: Ctx, payment_id: str) -> Payment:
    found = session.scalars(
        scoped_select(Payment, ctx.tenant_id).where(Payment.id == payment_id)
    ).first()
    if found is None:
        raise NotFoundError("No such payment.")
    return found


@router.get("/payments/{payment_id}", response_model=PaymentOut)
def get_payment(payment_id: PaymentId, db: DB, ctx: Reader) -> PaymentOut:
    with db.read() as session:
        return PaymentOut.model_validate(_payment(session, ctx, payment_id))


@router.get("/payments/{payment_id}/receipt", response_class=Response)
def get_receipt(
    payment_id: PaymentId,
    db: DB,
    ctx: Reader,
    format: Annotated[Literal["html", "pdf"], Query()] = "html",
) -> Response:
    """The itemized receipt in the patient's language: HTML, or ``?format=pdf``."""
    with db.read() as session:
        data = receipts.receipt_for(session, ctx, payment_id)
    return receipt_response(data, format)


def receipt_response(data: receipts.ReceiptData, fmt: str) -> Response:
    if fmt == "pdf":
        return Response(
            receipts.render_pdf(data),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="receipt-{data.number}.pdf"'},
        )
    return Response(receipts.render_html(data), media_type="text/html; charset=utf-8")


@router.post("/invoices/{invoice_id}/pay", status_code=201, response_model=BookingPaymentOut)
async def pay_invoice(
    invoice_id: Annotated[str, Path(max_length=64)],
    body: PayIn,
    request: Request,
    db: DB,
    ctx: Writer,
) -> BookingPaymentOut:
    """A payment of what an open invoice still asks for: a PaymentIntent for Stripe.js, or
    with ``"payment_method": "link"`` a payment page to send the patient."""

    def open_payment(session: Session) -> str:
        expires = ctx.now + timedelta(minutes=60) if body.payment_method == "link" else None
        return links.invoice_payment(
            session, ctx, invoice_id, method=body.payment_method, expires_at=expires
        ).id

    payment_id = await db.run_write(open_payment)
    started = await anyio.to_thread.run_sync(
        checkout.start, db, request.app.state.settings, ctx.tenant_id, payment_id, ctx.now
    )
    return BookingPaymentOut(
        id=started.payment.id,
        status=started.payment.status,
        amount=started.payment.amount,
        currency=started.payment.currency,
        method=started.payment.method,
        stripe_payment_intent_id=started.payment.stripe_payment_intent_id,
        client_secret=started.client_secret,
        checkout_url=started.checkout_url,
        expires_at=started.payment.expires_at,
    )
