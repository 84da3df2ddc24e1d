"""Admin UI: a clinic's invoices (filter by status) and one invoice with its lines,
taxes, totals, what was paid and what is still due. Patient ids only: no names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.payments import invoices
from clinicbridge.payments.models import INVOICE_STATUSES, Invoice, Payment
from clinicbridge.web.auth import own_tenant, page_context, require_session
from clinicbridge.web.billing import money
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("billing:read")]
PAGE_SIZE = 50


@router.get("/tenants/{tenant_id}/invoices")
def invoices_page(
    request: Request,
    tenant_id: str,
    ctx: Reader,
    status: Annotated[str, Query(max_length=16)] = "",
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    status = status if status in INVOICE_STATUSES else ""
    stmt = scoped_select(Invoice, ctx.tenant_id)
    if status:
        stmt = stmt.where(Invoice.status == status)
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = list(session.scalars(stmt.order_by(Invoice.id.desc()).limit(PAGE_SIZE)))
        due = {i.id: invoices.due_of(session, i) if i.status == "open" else 0 for i in rows}
    data |= {
        "invoices": rows,
        "due": due,
        "money": money,
        "filters": {"status": status},
        "statuses": INVOICE_STATUSES,
    }
    return templates.TemplateResponse(request, "invoices.html", data)


@router.get("/tenants/{tenant_id}/invoices/{invoice_id}")
def invoice_page(request: Request, tenant_id: str, invoice_id: str, ctx: Reader) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        invoice = invoices.get_invoice(session, ctx, invoice_id[:64])  # another clinic's: 404
        lines = invoices.lines_of(session, invoice)
        paid = invoices.amount_paid(session, invoice)
        payments = list(
            session.scalars(
                scoped_select(Payment, ctx.tenant_id)
                .where(Payment.invoice_id == invoice.id)
                .order_by(Payment.id)
            )
        )
    taxes: dict[str, dict[str, Any]] = {}
    for line in lines:
        for tax in line.taxes or []:
            entry = taxes.setdefault(
                f"{tax['name']}|{tax['percent']}",
                {"name": tax["name"], "percent": tax["percent"], "amount": 0},
            )
            entry["amount"] += int(tax["amount"])
    data |= {
        "invoice": invoice,
        "lines": lines,
        "taxes": list(taxes.values()),
        "paid": paid,
        "due": max(0, invoice.total - paid) if invoice.status == "open" else 0,
        "payments": payments,
        "money": money,
    }
    return templates.TemplateResponse(request, "invoice.html", data)
