"""``/api/v1/refunds``: ask for a refund, approve or reject one (two-person rule above
the clinic's threshold). The ledger changes only when Stripe reports the refund."""

from __future__ import annotations

import contextlib
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.payments import refunds
from clinicbridge.payments.errors import PaymentProviderUnavailableError
from clinicbridge.payments.schemas import RefundCreate, RefundOut, RefundReject
from clinicbridge.settings import Settings

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Refunder = Annotated[Ctx, require("billing:refund")]
RefundId = Annotated[str, Path(max_length=64)]
ONE = "/refunds/{refund_id}"


def _send(db: Database, settings: Settings, ctx: Ctx, refund_id: str) -> RefundOut:
    """Try to send a ``submitting`` refund now; if Stripe cannot be reached it stays
    ``submitting`` and the job sends it (same idempotency key)."""
    # Unreachable: the submit job, enqueued with the refund, retries (same key).
    with contextlib.suppress(PaymentProviderUnavailableError):
        refunds.submit(db, settings, refund_id, ctx.now)
    with db.read() as session:
        return RefundOut.model_validate(refunds.get_refund(session, ctx, refund_id))


@router.post("/refunds", status_code=201, response_model=RefundOut)
async def create_refund(body: RefundCreate, request: Request, db: DB, ctx: Refunder) -> RefundOut:
    """A full or partial refund of a payment, with a reason. Above the clinic's
    ``refund_approval_threshold`` it waits (``pending_approval``) for a second person."""

    def ask(session: Session) -> str:
        refund = refunds.request_refund(
            session,
            ctx,
            payment_id=body.payment_id,
            amount=body.amount,
            reason=body.reason,
            currency=body.currency,
        )
        return refund.id

    refund_id = await db.run_write(ask)
    return await anyio.to_thread.run_sync(_send, db, request.app.state.settings, ctx, refund_id)


@router.get("/refunds", response_model=ListOut[RefundOut])
def list_refunds(
    db: DB,
    ctx: Reader,
    page: Paging,
    status: Annotated[str | None, Query(max_length=24)] = None,
    payment_id: Annotated[str | None, Query(max_length=64)] = None,
) -> ListOut[RefundOut]:
    with db.read() as session:
        found = refunds.list_refunds(
            session,
            ctx,
            limit=page.limit,
            starting_after=page.starting_after,
            status=status,
            payment_id=payment_id,
        )
        return ListOut.of(found, RefundOut.model_validate)


@router.get(ONE, response_model=RefundOut)
def get_refund(refund_id: RefundId, db: DB, ctx: Reader) -> RefundOut:
    with db.read() as session:
        return RefundOut.model_validate(refunds.get_refund(session, ctx, refund_id))


@router.post(ONE + "/approve", response_model=RefundOut)
def approve_refund(refund_id: RefundId, request: Request, db: DB, ctx: Refunder) -> RefundOut:
    """The second person approves: the refund goes to Stripe. The requester cannot."""
    with db.write() as session:
        refunds.approve_refund(session, ctx, refund_id)
    return _send(db, request.app.state.settings, ctx, refund_id)


@router.post(ONE + "/reject", response_model=RefundOut)
def reject_refund(refund_id: RefundId, body: RefundReject, db: DB, ctx: Refunder) -> RefundOut:
    with db.write() as session:
        return RefundOut.model_validate(refunds.reject_refund(session, ctx, refund_id, body.reason))
