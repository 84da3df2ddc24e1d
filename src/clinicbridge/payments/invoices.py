"""Invoices: drafts with lines, finalize (number + ``charge`` entry), void, uncollectible.

Statuses: ``draft`` → ``open`` → ``paid`` | ``void`` | ``uncollectible``. Only drafts
change; finalizing
freezes each line's taxes (``taxes.line_taxes``) and totals.

Numbers are given at finalize, per clinic and per year of the finalize date in the
clinic's timezone: ``{prefix}-{year}-{n:06d}`` (``INV-2026-000123``; the prefix is a
billing setting). The counter row is incremented with an ``UPDATE ... RETURNING`` in
the finalizing transaction: it stays locked until that commits, so two finalizes never
get one number, and a finalize that rolls back gives its number back (no gaps).

Ledger: finalize posts ``charge +total``; voiding an open invoice posts an
``adjustment -total`` (only while nothing was paid on it); marking it uncollectible
posts a ``write_off`` of what is still due. Payments linked to the invoice (its
booking's deposit, payments of the invoice) count towards it; when they cover the
total it is ``paid`` and ``invoice.paid`` is published.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.patients.models import Patient
from clinicbridge.payments import events, ledger, taxes
from clinicbridge.payments.config import billing_settings
from clinicbridge.payments.errors import InvoiceStateError
from clinicbridge.payments.models import Invoice, InvoiceCounter, InvoiceLine, Payment
from clinicbridge.scheduling.models import Booking, Service

RESOURCE = "invoice"
MAX_LINES = 200


def number_format(prefix: str, year: int, n: int) -> str:
    return f"{prefix}-{year}-{n:06d}"


# --- reads -------------------------------------------------------------------------------


def get_invoice(session: Session, ctx: Ctx, invoice_id: str, *, lock: bool = False) -> Invoice:
    stmt = scoped_select(Invoice, ctx.tenant_id).where(Invoice.id == invoice_id)
    found = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise NotFoundError("No such invoice.")
    return found


def lines_of(session: Session, invoice: Invoice) -> list[InvoiceLine]:
    return list(
        session.scalars(
            sa.select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice.id)
            .order_by(InvoiceLine.position, InvoiceLine.id)
        )
    )


def amount_paid(session: Session, invoice: Invoice) -> int:
    """What succeeded payments linked to the invoice received."""
    paid = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Payment.amount_received), 0)).where(
            Payment.tenant_id == invoice.tenant_id,
            Payment.invoice_id == invoice.id,
            Payment.status == "succeeded",
        )
    )
    return int(paid or 0)


def list_invoices(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    starting_after: str | None,
    patient_id: str | None = None,
    status: str | None = None,
) -> Page[Invoice]:
    stmt = scoped_select(Invoice, ctx.tenant_id)
    if patient_id is not None:
        stmt = stmt.where(Invoice.patient_id == patient_id)
    if status is not None:
        stmt = stmt.where(Invoice.status == status)
    return paginate(session, stmt, Invoice.id, limit, starting_after)


# --- drafts ------------------------------------------------------------------------------


def create_invoice(
    session: Session,
    ctx: Ctx,
    *,
    patient_id: str,
    booking_id: str | None = None,
    memo: str | None = None,
    lines: list[dict[str, Any]] | None = None,
) -> Invoice:
    """A draft for a patient (optionally for a booking), in the clinic's currency."""
    patient = session.scalars(
        scoped_select(Patient, ctx.tenant_id).where(Patient.id == patient_id)
    ).first()
    if patient is None:
        raise InvalidInputError.one("patient_id", "no such patient", "not_found")
    if booking_id is not None:
        booking = session.scalars(
            scoped_select(Booking, ctx.tenant_id).where(Booking.id == booking_id)
        ).first()
        if booking is None:
            raise InvalidInputError.one("booking_id", "no such booking", "not_found")
        if booking.patient_id != patient.id:
            raise InvalidInputError.one("booking_id", "this booking is another patient's")
    invoice = Invoice(
        id=new_id("inv"),
        tenant_id=ctx.tenant_id,
        patient_id=patient.id,
        booking_id=booking_id,
        status="draft",
        currency=ledger.clinic_currency(session, ctx.tenant_id),
        subtotal=0,
        discount_total=0,
        tax_total=0,
        total=0,
        memo=memo,
        created_by=f"{ctx.actor_type}:{ctx.actor_id}",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(invoice)
    session.flush()
    for i, line in enumerate(lines or []):
        _add_line(session, ctx, invoice, line, field=f"lines.{i}")
    _recompute(session, invoice)
    record(
        session,
        ctx,
        "invoice.create",
        RESOURCE,
        invoice.id,
        diff={"patient_id": patient.id, "booking_id": booking_id, "lines": len(lines or [])},
    )
    return invoice


def add_line(session: Session, ctx: Ctx, invoice_id: str, line: dict[str, Any]) -> Invoice:
    invoice = _draft(session, ctx, invoice_id)
    added = _add_line(session, ctx, invoice, line, field="")
    _recompute(session, invoice)
    invoice.updated_at = ctx.now
    record(session, ctx, "invoice.line.add", RESOURCE, invoice.id, diff={"line_id": added.id})
    return invoice


def remove_line(session: Session, ctx: Ctx, invoice_id: str, line_id: str) -> Invoice:
    invoice = _draft(session, ctx, invoice_id)
    line = session.scalars(
        sa.select(InvoiceLine).where(
            InvoiceLine.invoice_id == invoice.id, InvoiceLine.id == line_id
        )
    ).first()
    if line is None:
        raise NotFoundError("No such invoice line.")
    session.delete(line)
    session.flush()
    _recompute(session, invoice)
    invoice.updated_at = ctx.now
    record(session, ctx, "invoice.line.remove", RESOURCE, invoice.id, diff={"line_id": line_id})
    return invoice


def _draft(session: Session, ctx: Ctx, invoice_id: str) -> Invoice:
    invoice = get_invoice(session, ctx, invoice_id, lock=True)
    if invoice.status != "draft":
        raise InvoiceStateError(f"A {invoice.status} invoice cannot change; only drafts do.")
    return invoice


def _name(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _add_line(
    session: Session, ctx: Ctx, invoice: Invoice, data: dict[str, Any], *, field: str
) -> InvoiceLine:
    count = session.scalar(sa.select(sa.func.count()).where(InvoiceLine.invoice_id == invoice.id))
    if (count or 0) >= MAX_LINES:
        raise InvalidInputError.one(_name(field, "lines"), f"at most {MAX_LINES} lines")
    description, unit_price = data.get("description"), data.get("unit_price")
    service_id = data.get("service_id")
    if service_id is not None:
        service = session.scalars(
            scoped_select(Service, ctx.tenant_id).where(Service.id == service_id)
        ).first()
        if service is None:
            raise InvalidInputError.one(_name(field, "service_id"), "no such service", "not_found")
        description = description or service.name
        if unit_price is None:
            if service.price_minor is None:
                raise InvalidInputError.one(
                    _name(field, "unit_price"),
                    "the service has no price; give unit_price",
                    "missing",
                )
            if (service.currency or "").lower() != invoice.currency:
                raise InvalidInputError.one(
                    _name(field, "service_id"),
                    "the service is priced in another currency",
                    "currency",
                )
            unit_price = service.price_minor
    if not description:
        raise InvalidInputError.one(_name(field, "description"), "is required", "missing")
    if unit_price is None:
        raise InvalidInputError.one(_name(field, "unit_price"), "is required", "missing")
    quantity, discount = int(data.get("quantity", 1)), int(data.get("discount", 0))
    if discount > quantity * int(unit_price):
        raise InvalidInputError.one(_name(field, "discount"), "is more than the line's amount")
    code = data.get("tax_code")
    if code is None:
        code = billing_settings(session, ctx.tenant_id).default_tax_code
    elif not taxes.known_code(session, ctx.tenant_id, code):
        raise InvalidInputError.one(
            _name(field, "tax_code"), "no tax rate has this tax code", "unknown"
        )
    position = session.scalar(
        sa.select(sa.func.coalesce(sa.func.max(InvoiceLine.position), 0)).where(
            InvoiceLine.invoice_id == invoice.id
        )
    )
    amount = quantity * int(unit_price) - discount
    line = InvoiceLine(
        id=new_id("inl"),
        tenant_id=ctx.tenant_id,
        invoice_id=invoice.id,
        position=int(position or 0) + 1,
        service_id=service_id,
        description=str(description)[:500],
        quantity=quantity,
        unit_price=int(unit_price),
        discount=discount,
        tax_code=code,
        amount=amount,
        tax_amount=0,
        taxes=[],
        total=amount,
        created_at=ctx.now,
    )
    session.add(line)
    session.flush()
    return line


def _recompute(session: Session, invoice: Invoice) -> None:
    """Taxes from the current rates (drafts) and the invoice's totals."""
    subtotal = discount = tax = 0
    for line in lines_of(session, invoice):
        line.taxes = taxes.line_taxes(
            line.amount, taxes.rates_for(session, invoice.tenant_id, line.tax_code)
        )
        line.tax_amount = sum(int(t["amount"]) for t in line.taxes)
        line.total = line.amount + line.tax_amount
        subtotal += line.quantity * line.unit_price
        discount += line.discount
        tax += line.tax_amount
    invoice.subtotal, invoice.discount_total, invoice.tax_total = subtotal, discount, tax
    invoice.total = subtotal - discount + tax
    session.flush()


# --- finalize, void, uncollectible ------------------------------------------------------


def _next_number(session: Session, tenant_id: str, year: int, prefix: str) -> str:
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(InvoiceCounter)
    session.execute(
        insert.values(tenant_id=tenant_id, year=year, last_number=0).on_conflict_do_nothing()
    )
    n = session.execute(
        sa.update(InvoiceCounter)
        .where(InvoiceCounter.tenant_id == tenant_id, InvoiceCounter.year == year)
        .values(last_number=InvoiceCounter.last_number + 1)
        .returning(InvoiceCounter.last_number)
    ).scalar_one()
    return number_format(prefix, year, int(n))


def finalize_invoice(session: Session, ctx: Ctx, invoice_id: str) -> Invoice:
    """Freeze a draft: taxes, totals, a number, the ``charge`` entry; its booking's
    payments count towards it (a deposit paid at booking)."""
    invoice = _draft(session, ctx, invoice_id)
    lines = lines_of(session, invoice)
    if not lines:
        raise InvalidInputError.one("lines", "an invoice needs at least one line", "empty")
    _recompute(session, invoice)
    if invoice.total <= 0:
        raise InvalidInputError.one("lines", "the invoice's total must be more than 0", "zero")
    tenant = session.get(Tenant, ctx.tenant_id)
    assert tenant is not None
    year = ctx.now.astimezone(ZoneInfo(tenant.timezone)).year
    prefix = billing_settings(session, ctx.tenant_id).invoice_prefix
    invoice.number = _next_number(session, ctx.tenant_id, year, prefix)
    invoice.status, invoice.finalized_at, invoice.updated_at = "open", ctx.now, ctx.now
    ledger.post(
        session,
        ledger.Posting(
            ctx.tenant_id,
            invoice.patient_id,
            "charge",
            invoice.total,
            invoice.currency,
            f"invoice:{invoice.id}:charge",
            f"Invoice {invoice.number}",
            ctx.now,
            invoice_id=invoice.id,
            booking_id=invoice.booking_id,
        ),
        by=f"{ctx.actor_type}:{ctx.actor_id}",
        now=ctx.now,
    )
    if invoice.booking_id is not None:
        session.execute(
            sa.update(Payment)
            .where(
                Payment.tenant_id == ctx.tenant_id,
                Payment.booking_id == invoice.booking_id,
                Payment.invoice_id.is_(None),
                Payment.currency == invoice.currency,
            )
            .values(invoice_id=invoice.id)
            .execution_options(synchronize_session=False)
        )
    record(
        session,
        ctx,
        "invoice.finalize",
        RESOURCE,
        invoice.id,
        diff={"number": invoice.number, "total": invoice.total, "status": ["draft", "open"]},
    )
    settle(session, ctx, invoice)
    return invoice


def settle(session: Session, ctx: Ctx, invoice: Invoice) -> None:
    """``paid`` once the linked payments cover the total (publishes ``invoice.paid``)."""
    if invoice.status != "open":
        return
    if amount_paid(session, invoice) < invoice.total:
        return
    before = invoice.status
    invoice.status, invoice.paid_at, invoice.updated_at = "paid", ctx.now, ctx.now
    session.flush()
    record(session, ctx, "invoice.paid", RESOURCE, invoice.id, diff={"status": [before, "paid"]})
    events.emit(session, ctx.tenant_id, "invoice.paid", events.invoice_data(invoice), ctx.now)


def void_invoice(session: Session, ctx: Ctx, invoice_id: str) -> Invoice:
    """Void a draft, or an open invoice nothing was paid on (its charge is reversed)."""
    invoice = get_invoice(session, ctx, invoice_id, lock=True)
    if invoice.status not in ("draft", "open"):
        raise InvoiceStateError(f"A {invoice.status} invoice cannot be voided.")
    if invoice.status == "open":
        if amount_paid(session, invoice) > 0:
            raise InvoiceStateError("Payments were made on this invoice; refund them first.")
        ledger.post(
            session,
            ledger.Posting(
                ctx.tenant_id,
                invoice.patient_id,
                "adjustment",
                -invoice.total,
                invoice.currency,
                f"invoice:{invoice.id}:void",
                f"Invoice {invoice.number} voided",
                ctx.now,
                invoice_id=invoice.id,
            ),
            by=f"{ctx.actor_type}:{ctx.actor_id}",
            now=ctx.now,
        )
    before = invoice.status
    invoice.status, invoice.voided_at, invoice.updated_at = "void", ctx.now, ctx.now
    record(session, ctx, "invoice.void", RESOURCE, invoice.id, diff={"status": [before, "void"]})
    return invoice


def mark_uncollectible(session: Session, ctx: Ctx, invoice_id: str) -> Invoice:
    """Give up on what is still due: a ``write_off`` entry of that amount."""
    invoice = get_invoice(session, ctx, invoice_id, lock=True)
    if invoice.status != "open":
        raise InvoiceStateError(f"A {invoice.status} invoice cannot be marked uncollectible.")
    due = invoice.total - amount_paid(session, invoice)
    if due > 0:
        ledger.post(
            session,
            ledger.Posting(
                ctx.tenant_id,
                invoice.patient_id,
                "write_off",
                -due,
                invoice.currency,
                f"invoice:{invoice.id}:write_off",
                f"Invoice {invoice.number} written off",
                ctx.now,
                invoice_id=invoice.id,
            ),
            by=f"{ctx.actor_type}:{ctx.actor_id}",
            now=ctx.now,
        )
    invoice.status, invoice.uncollectible_at, invoice.updated_at = "uncollectible", ctx.now, ctx.now
    record(
        session,
        ctx,
        "invoice.uncollectible",
        RESOURCE,
        invoice.id,
        diff={"status": ["open", "uncollectible"], "written_off": due},
    )
    return invoice


def due_of(session: Session, invoice: Invoice) -> int:
    return max(0, invoice.total - amount_paid(session, invoice))
