"""Admin UI: a clinic's payments (filter by status, ask for a refund), refunds (approve
or reject the ones waiting for a second person), and a patient's page: their balance
with the ledger entries behind it, and their memberships (plan, status, period end,
next amount).

Refunds go through ``payments.refunds``, which owns the rules: what is still
refundable, the clinic's approval threshold, and that whoever asked cannot approve.
The patient's page is a read of patient data, audited once (purpose ``admin_balance``); the
lists show patient ids only, never names, so they read no patient record.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import sqlalchemy as sa
from babel.numbers import get_currency_precision
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError, NotFoundError
from clinicbridge.core.models import User
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging.variables import babel_locale, format_amount
from clinicbridge.patients.models import Patient
from clinicbridge.payments import ledger, memberships, refunds
from clinicbridge.payments.errors import PaymentProviderUnavailableError
from clinicbridge.payments.models import (
    PAYMENT_STATUSES,
    REFUND_STATUSES,
    LedgerEntry,
    Payment,
    Refund,
)
from clinicbridge.web.auth import checked_form, own_tenant, page_context, require_session
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("billing:read")]
Refunder = Annotated[Ctx, require_session("billing:refund")]
PAGE_SIZE = 50
LEDGER_SIZE = 200
BALANCE_PURPOSE = "admin_balance"
PAYMENTS = "_payments.html"
REFUNDS = "_refunds.html"
# Stripe's subscription statuses in the words staff read (plus our ``creating``).
MEMBERSHIP_STATUS_LABELS = {
    "creating": "being set up",
    "incomplete": "awaiting first payment",
    "incomplete_expired": "expired unpaid",
    "trialing": "trialing",
    "active": "active",
    "past_due": "past due",
    "unpaid": "unpaid",
    "paused": "paused",
    "canceled": "cancelled",
}


def money(amount: int, currency: str) -> str:
    """``9000, "cad"`` → ``CA$90.00`` (the admin UI speaks English)."""
    return format_amount(amount, currency.upper(), babel_locale("en"))


def parse_amount(text: str, currency: str, field: str = "amount") -> int:
    """``"90"``, ``"90.00"`` or ``"90,00"`` → minor units; InvalidInputError naming
    ``field`` for anything else (more decimals than the currency has included)."""
    digits = get_currency_precision(currency.upper())
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        raise InvalidInputError.one(field, "must be an amount like 25.00", "not_amount") from None
    minor = value.scaleb(digits)
    if not value.is_finite() or minor != minor.to_integral_value():
        raise InvalidInputError.one(field, "must be an amount like 25.00", "not_amount")
    if minor <= 0:
        raise InvalidInputError.one(field, "must be more than 0", "not_positive")
    return int(minor)


def _people(session: Session, ctx: Ctx, actors: set[str]) -> dict[str, str]:
    """``user:usr_...`` → that staff member's e-mail (API keys stay as they are)."""
    ids = [a.partition(":")[2] for a in actors if a.startswith("user:")]
    if not ids:
        return {}
    rows = session.execute(
        sa.select(User.id, User.email).where(User.tenant_id == ctx.tenant_id, User.id.in_(ids))
    )
    return {f"user:{uid}": email for uid, email in rows}


def _me(ctx: Ctx) -> str:
    return f"{ctx.actor_type}:{ctx.actor_id}"


# Payments -----------------------------------------------------------------------------


def _payments_data(
    request: Request, ctx: Ctx, status: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    stmt = scoped_select(Payment, ctx.tenant_id)
    if status:
        stmt = stmt.where(Payment.status == status)
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = list(session.scalars(stmt.order_by(Payment.id.desc()).limit(PAGE_SIZE)))
        left = {
            p.id: refunds.refundable(session, p) if p.status == "succeeded" else 0 for p in rows
        }
    return data | {
        "payments": rows,
        "refundable": left,
        "money": money,
        "filters": {"status": status},
        "statuses": PAYMENT_STATUSES,
        "field_errors": {},
        "form_payment": None,
        **(extra or {}),
    }


@router.get("/tenants/{tenant_id}/payments")
def payments_page(
    request: Request,
    tenant_id: str,
    ctx: Reader,
    status: Annotated[str, Query(max_length=24)] = "",
) -> HTMLResponse:
    """Newest first; a succeeded payment with something left to refund has the form."""
    own_tenant(ctx, tenant_id)
    data = _payments_data(request, ctx, status if status in PAYMENT_STATUSES else "")
    name = PAYMENTS if request.headers.get("hx-request") else "payments.html"
    return templates.TemplateResponse(request, name, data)


def _send(request: Request, ctx: Ctx, refund_id: str) -> None:
    """Send a ``submitting`` refund now; if Stripe is unreachable, its job will."""
    with contextlib.suppress(PaymentProviderUnavailableError):
        refunds.submit(db_of(request), request.app.state.settings, refund_id, ctx.now)


@router.post("/tenants/{tenant_id}/payments/{payment_id}/refund")
async def request_refund(
    request: Request, tenant_id: str, payment_id: str, ctx: Refunder
) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    payment_id = payment_id[:64]
    typed = {k: str(form.get(k, ""))[:500] for k in ("amount", "reason")}
    try:
        with db_of(request).write() as session:
            payment = session.scalars(
                scoped_select(Payment, ctx.tenant_id).where(Payment.id == payment_id)
            ).first()
            if payment is None:
                raise NotFoundError("No such payment.")
            amount = parse_amount(typed["amount"], payment.currency)
            refund = refunds.request_refund(
                session, ctx, payment_id=payment.id, amount=amount, reason=typed["reason"]
            )
            refund_id, pending = refund.id, refund.status == "pending_approval"
    except InvalidInputError as exc:
        data = _payments_data(request, ctx, "", {
            "field_errors": {e.field: e.message for e in exc.errors},
            "form_payment": payment_id, "typed": typed,
        })  # fmt: skip
        return templates.TemplateResponse(request, PAYMENTS, data, status_code=422)
    except ClinicBridgeError as exc:
        data = _payments_data(request, ctx, "", {"payments_error": exc.detail})
        return templates.TemplateResponse(request, PAYMENTS, data, status_code=exc.status)
    if not pending:
        _send(request, ctx, refund_id)
    data = _payments_data(request, ctx, "", {"requested": refund_id, "pending": pending})
    return templates.TemplateResponse(request, PAYMENTS, data)


# Refunds --------------------------------------------------------------------------------


def _refunds_data(
    request: Request, ctx: Ctx, status: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    stmt = scoped_select(Refund, ctx.tenant_id)
    if status:
        stmt = stmt.where(Refund.status == status)
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = list(session.scalars(stmt.order_by(Refund.id.desc()).limit(PAGE_SIZE)))
        people = _people(
            session, ctx, {r.requested_by for r in rows} | {r.approved_by or "" for r in rows}
        )
    return data | {
        "refunds": rows,
        "people": people,
        "me_actor": _me(ctx),
        "money": money,
        "filters": {"status": status},
        "statuses": REFUND_STATUSES,
        **(extra or {}),
    }


@router.get("/tenants/{tenant_id}/refunds")
def refunds_page(
    request: Request,
    tenant_id: str,
    ctx: Reader,
    status: Annotated[str, Query(max_length=24)] = "",
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    data = _refunds_data(request, ctx, status if status in REFUND_STATUSES else "")
    name = REFUNDS if request.headers.get("hx-request") else "refunds.html"
    return templates.TemplateResponse(request, name, data)


async def _decide(
    request: Request, tenant_id: str, refund_id: str, ctx: Ctx, approve: bool
) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    refund_id = refund_id[:64]
    try:
        with db_of(request).write() as session:
            if approve:
                refunds.approve_refund(session, ctx, refund_id)
            else:
                reason = str(form.get("reason", ""))[:500]
                refunds.reject_refund(session, ctx, refund_id, reason)
    except ClinicBridgeError as exc:
        data = _refunds_data(request, ctx, "", {"refunds_error": exc.detail})
        return templates.TemplateResponse(request, REFUNDS, data, status_code=exc.status)
    if approve:
        _send(request, ctx, refund_id)
    done = {"decided": refund_id, "approved": approve}
    return templates.TemplateResponse(request, REFUNDS, _refunds_data(request, ctx, "", done))


@router.post("/tenants/{tenant_id}/refunds/{refund_id}/approve")
async def approve_refund(
    request: Request, tenant_id: str, refund_id: str, ctx: Refunder
) -> HTMLResponse:
    """The second person's yes: the refund goes to Stripe. The requester gets a 403."""
    return await _decide(request, tenant_id, refund_id, ctx, approve=True)


@router.post("/tenants/{tenant_id}/refunds/{refund_id}/reject")
async def reject_refund(
    request: Request, tenant_id: str, refund_id: str, ctx: Refunder
) -> HTMLResponse:
    return await _decide(request, tenant_id, refund_id, ctx, approve=False)


# A patient's balance -------------------------------------------------------------------------


@router.get("/tenants/{tenant_id}/patients/{patient_id}/balance")
def balance_page(request: Request, tenant_id: str, patient_id: str, ctx: Reader) -> HTMLResponse:
    """The balance (positive: the patient owes) and the entries behind it, newest first,
    and the patient's memberships, newest first."""
    own_tenant(ctx, tenant_id)
    with db_of(request).write() as session:  # the PHI read is an audit write
        data = page_context(request, ctx, session)
        owed, currency = ledger.patient_balance(
            session, ctx, patient_id[:64], purpose=BALANCE_PURPOSE
        )
        patient = session.get(Patient, patient_id[:64])
        assert patient is not None  # patient_balance found it in this clinic
        entries = list(
            session.scalars(
                scoped_select(LedgerEntry, ctx.tenant_id)
                .where(LedgerEntry.patient_id == patient.id)
                .order_by(LedgerEntry.id.desc())
                .limit(LEDGER_SIZE)
            )
        )
        held = memberships.held_by(session, ctx, patient.id)
        name = f"{patient.first_name} {patient.last_name}"
    data |= {
        "patient_id": patient.id,
        "patient_name": name,
        "balance": owed,
        "currency": currency,
        "entries": entries,
        "memberships": held,
        "membership_status": lambda status: MEMBERSHIP_STATUS_LABELS.get(status, status),
        "money": money,
    }
    return templates.TemplateResponse(request, "balance.html", data)
