"""``/pay/done`` and ``/pay/cancelled``: where Stripe Checkout sends a patient back after
a payment link (``checkout.py`` sets them as the session's success and cancel URLs).

Public pages, no sign-in: anyone holding the link may open them, so they say nothing
about the patient or the payment (no name, no amount, no invoice) — only the clinic's
name, and whether the payment is received or still being confirmed. The query's
``payment`` id only picks the clinic and that one word; an unknown or malformed id
gets the same generic page, never an error that would confirm what exists.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from clinicbridge.api.deps import db_of
from clinicbridge.core.models import Tenant
from clinicbridge.payments.models import Payment
from clinicbridge.web.routes import templates

router = APIRouter(include_in_schema=False)
PATHS = frozenset({"/pay/done", "/pay/cancelled"})
_PAYMENT_ID = re.compile(r"^pay_[0-9A-Za-z]{10,40}$")
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
PaymentParam = Annotated[str, Query(alias="payment")]


def _lookup(request: Request, payment_id: str) -> tuple[str | None, str | None]:
    """The clinic's name and the payment's status, or ``(None, None)``."""
    if not _PAYMENT_ID.match(payment_id):
        return None, None
    with db_of(request).read() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            return None, None
        tenant = session.get(Tenant, payment.tenant_id)
        return (tenant.name if tenant is not None else None), payment.status


def _page(request: Request, state: str, clinic: str | None) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "pay_result.html", {"state": state, "clinic": clinic}, headers=HEADERS
    )


@router.get("/pay/done")
def payment_done(request: Request, payment_id: PaymentParam = "") -> HTMLResponse:
    """Back from a paid Checkout Session: received, or being confirmed (the webhook may
    not have arrived yet)."""
    clinic, status = _lookup(request, payment_id)
    return _page(request, "received" if status == "succeeded" else "confirming", clinic)


@router.get("/pay/cancelled")
def payment_cancelled(request: Request, payment_id: PaymentParam = "") -> HTMLResponse:
    """Back without paying: nothing was charged; the link can be used again."""
    clinic, status = _lookup(request, payment_id)
    return _page(request, "received" if status == "succeeded" else "cancelled", clinic)
