"""``/api/v1/invoices``: drafts and their lines, finalize, void, mark uncollectible."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.payments import invoices
from clinicbridge.payments.models import Invoice
from clinicbridge.payments.schemas import (
    InvoiceCreate,
    InvoiceLineIn,
    InvoiceLineOut,
    InvoiceOut,
    InvoiceStatus,
)

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Writer = Annotated[Ctx, require("billing:write")]
InvoiceId = Annotated[str, Path(max_length=64)]
ONE = "/invoices/{invoice_id}"


def invoice_out(session: Session, invoice: Invoice) -> InvoiceOut:
    paid = invoices.amount_paid(session, invoice)
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status,
        patient_id=invoice.patient_id,
        booking_id=invoice.booking_id,
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        discount_total=invoice.discount_total,
        tax_total=invoice.tax_total,
        total=invoice.total,
        amount_paid=paid,
        amount_due=max(0, invoice.total - paid) if invoice.status == "open" else 0,
        memo=invoice.memo,
        lines=[InvoiceLineOut.model_validate(line) for line in invoices.lines_of(session, invoice)],
        created_at=invoice.created_at,
        finalized_at=invoice.finalized_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
        uncollectible_at=invoice.uncollectible_at,
    )


@router.post("/invoices", status_code=201, response_model=InvoiceOut)
def create_invoice(body: InvoiceCreate, db: DB, ctx: Writer) -> InvoiceOut:
    """A draft invoice for a patient (optionally for a booking), with its lines."""
    with db.write() as session:
        invoice = invoices.create_invoice(
            session,
            ctx,
            patient_id=body.patient_id,
            booking_id=body.booking_id,
            memo=body.memo,
            lines=[line.model_dump() for line in body.lines],
        )
        return invoice_out(session, invoice)


@router.get("/invoices", response_model=ListOut[InvoiceOut])
def list_invoices(
    db: DB,
    ctx: Reader,
    page: Paging,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    status: InvoiceStatus | None = None,
) -> ListOut[InvoiceOut]:
    with db.read() as session:
        found = invoices.list_invoices(
            session,
            ctx,
            limit=page.limit,
            starting_after=page.starting_after,
            patient_id=patient_id,
            status=status,
        )
        return ListOut.of(found, lambda row: invoice_out(session, row))


@router.get(ONE, response_model=InvoiceOut)
def get_invoice(invoice_id: InvoiceId, db: DB, ctx: Reader) -> InvoiceOut:
    with db.read() as session:
        return invoice_out(session, invoices.get_invoice(session, ctx, invoice_id))


@router.post(ONE + "/lines", status_code=201, response_model=InvoiceOut)
def add_line(invoice_id: InvoiceId, body: InvoiceLineIn, db: DB, ctx: Writer) -> InvoiceOut:
    """Add a line to a draft."""
    with db.write() as session:
        return invoice_out(session, invoices.add_line(session, ctx, invoice_id, body.model_dump()))


@router.delete(ONE + "/lines/{line_id}", response_model=InvoiceOut)
def remove_line(
    invoice_id: InvoiceId, line_id: Annotated[str, Path(max_length=64)], db: DB, ctx: Writer
) -> InvoiceOut:
    with db.write() as session:
        return invoice_out(session, invoices.remove_line(session, ctx, invoice_id, line_id))


@router.post(ONE + "/finalize", response_model=InvoiceOut)
def finalize_invoice(invoice_id: InvoiceId, db: DB, ctx: Writer) -> InvoiceOut:
    """Number the invoice, freeze its taxes and charge the patient's ledger."""
    with db.write() as session:
        return invoice_out(session, invoices.finalize_invoice(session, ctx, invoice_id))


@router.post(ONE + "/void", response_model=InvoiceOut)
def void_invoice(invoice_id: InvoiceId, db: DB, ctx: Writer) -> InvoiceOut:
    with db.write() as session:
        return invoice_out(session, invoices.void_invoice(session, ctx, invoice_id))


@router.post(ONE + "/mark-uncollectible", response_model=InvoiceOut)
def mark_uncollectible(invoice_id: InvoiceId, db: DB, ctx: Writer) -> InvoiceOut:
    """Write off what is still due."""
    with db.write() as session:
        return invoice_out(session, invoices.mark_uncollectible(session, ctx, invoice_id))
