"""Front desk card payments (Stripe Terminal): ``/terminal/connection-tokens`` and
``/terminal/payments``; allowed to the ``front_desk`` role (``billing:terminal``)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.core.context import Ctx
from clinicbridge.payments import terminal
from clinicbridge.payments.connect_schemas import (
    ConnectionTokenIn,
    ConnectionTokenOut,
    TerminalPaymentIn,
)
from clinicbridge.payments.schemas import BookingPaymentOut, PaymentOut

router = APIRouter(prefix="/terminal", tags=["billing"], route_class=IdempotentRoute)
Desk = Annotated[Ctx, require("billing:terminal")]


@router.post("/connection-tokens", status_code=201, response_model=ConnectionTokenOut)
async def connection_token(
    body: ConnectionTokenIn, request: Request, db: DB, ctx: Desk
) -> ConnectionTokenOut:
    """A connection token for the desk's Terminal SDK (never stored)."""
    made = await anyio.to_thread.run_sync(
        terminal.connection_token, db, request.app.state.settings, ctx, body.location
    )
    return ConnectionTokenOut(secret=made.secret, location=made.location)


@router.post("/payments", status_code=201, response_model=BookingPaymentOut)
async def start_payment(
    body: TerminalPaymentIn, request: Request, db: DB, ctx: Desk
) -> BookingPaymentOut:
    """A card-present payment; the reader collects the card with ``client_secret``."""

    def open_payment(session: Session) -> str:
        payment = terminal.open_payment(
            session,
            ctx,
            patient_id=body.patient_id,
            amount=body.amount,
            booking_id=body.booking_id,
            invoice_id=body.invoice_id,
        )
        return payment.id

    payment_id = await db.run_write(open_payment)
    started = await anyio.to_thread.run_sync(
        terminal.start, db, request.app.state.settings, ctx, payment_id
    )
    return BookingPaymentOut(
        id=started.payment.id,
        status=started.payment.status,
        amount=started.payment.amount,
        currency=started.payment.currency,
        method=started.payment.method,
        stripe_payment_intent_id=started.payment.stripe_payment_intent_id,
        client_secret=started.client_secret,
    )


@router.post("/payments/{payment_id}/capture", response_model=PaymentOut)
async def capture_payment(
    payment_id: Annotated[str, Path(max_length=64)], request: Request, db: DB, ctx: Desk
) -> PaymentOut:
    """Capture the presented card: the payment succeeds and is posted to the ledger."""
    payment = await anyio.to_thread.run_sync(
        terminal.capture, db, request.app.state.settings, ctx, payment_id
    )
    return PaymentOut.model_validate(payment)
