"""Refunds: requested by staff (``billing:refund``), approved by a second person above
the clinic's threshold, sent to Stripe with an idempotency key, booked on the ledger
only when Stripe reports the charge refunded.

* What can still be refunded = what the payment received - what Stripe already
  refunded (ours, or made in Stripe's dashboard) - our refunds still on their way
  (awaiting approval, being sent, pending at Stripe). The payment row is locked while
  this is checked, so two requests cannot both take the last amount.
* Above ``refund_approval_threshold`` a refund waits in ``pending_approval``; the
  requester cannot approve their own (``SelfApprovalError``); approve and reject are
  audited with who, when and why.
* Sending: ``submitting`` is committed first (with a job as a safety net), then Stripe
  is called with ``cb:{refund_id}:refund:v1``: a retry after a timeout gets the same
  refund back, never a second one.
* Stripe's word (``charge.refunded`` and the refund objects it lists) moves our rows
  forward and posts one ``refund`` entry per Stripe refund that succeeded (source key
  ``stripe:refund:{re_id}``), whether it came from us or from the dashboard; a refund
  that fails after succeeding gets a reversing ``adjustment``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue
from clinicbridge.payments import events, ledger, stripe_api
from clinicbridge.payments.config import billing_settings
from clinicbridge.payments.errors import (
    ChargeDisputedError,
    PaymentStateError,
    RefundStateError,
    SelfApprovalError,
    StripeRefusedError,
)
from clinicbridge.payments.models import LedgerEntry, Payment, Refund
from clinicbridge.settings import Settings

RESOURCE = "refund"
SUBMIT_KIND = "payments.submit_refund"
SUBMIT_SAFETY_NET = timedelta(minutes=1)  # the job runs if the inline call did not
_RANK = {
    "pending_approval": 0,
    "submitting": 1,
    "pending": 2,
    "succeeded": 3,
    "failed": 4,
    "canceled": 4,
    "rejected": 9,
}
_FROM_STRIPE = {
    "pending": "pending",
    "requires_action": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}


def _actor(ctx: Ctx) -> str:
    return f"{ctx.actor_type}:{ctx.actor_id}"


def get_refund(session: Session, ctx: Ctx, refund_id: str, *, lock: bool = False) -> Refund:
    stmt = scoped_select(Refund, ctx.tenant_id).where(Refund.id == refund_id)
    found = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise NotFoundError("No such refund.")
    return found


def list_refunds(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None = None,
    payment_id: str | None = None,
) -> Page[Refund]:
    stmt = scoped_select(Refund, ctx.tenant_id)
    if status is not None:
        stmt = stmt.where(Refund.status == status)
    if payment_id is not None:
        stmt = stmt.where(Refund.payment_id == payment_id)
    return paginate(session, stmt, Refund.id, limit, starting_after)


def refundable(session: Session, payment: Payment, *, besides: str | None = None) -> int:
    """What can still be refunded (see the module docstring); ``besides`` leaves one
    refund out of the count (the one being approved)."""
    rows = session.execute(
        sa.select(Refund.status, sa.func.coalesce(sa.func.sum(Refund.amount), 0))
        .where(Refund.payment_id == payment.id, Refund.id != (besides or ""))
        .group_by(Refund.status)
    ).all()
    by_status = {status: int(total) for status, total in rows}
    done = max(payment.amount_refunded, by_status.get("succeeded", 0))
    on_the_way = sum(by_status.get(s, 0) for s in ("pending_approval", "submitting", "pending"))
    return payment.amount_received - done - on_the_way


def request_refund(
    session: Session,
    ctx: Ctx,
    *,
    payment_id: str,
    amount: int,
    reason: str,
    currency: str | None = None,
) -> Refund:
    if amount <= 0:
        raise InvalidInputError.one("amount", "must be more than 0", "not_positive")
    reason = reason.strip()
    if not reason:
        raise InvalidInputError.one("reason", "is required", "missing")
    payment = session.scalars(
        scoped_select(Payment, ctx.tenant_id).where(Payment.id == payment_id).with_for_update()
    ).first()
    if payment is None:
        raise InvalidInputError.one("payment_id", "no such payment", "not_found")
    if currency is not None and currency.lower() != payment.currency:
        raise InvalidInputError.one("currency", "is not the payment's currency", "mismatch")
    if payment.status != "succeeded":
        raise PaymentStateError(f"A {payment.status} payment cannot be refunded.")
    if payment.disputed:
        raise ChargeDisputedError("The charge is disputed; it cannot be refunded.")
    left = refundable(session, payment)
    if amount > left:
        raise InvalidInputError.one(
            "amount", f"is more than can still be refunded ({left})", "above_refundable"
        )
    threshold = billing_settings(session, ctx.tenant_id).refund_approval_threshold
    needs_approval = threshold is not None and amount > threshold
    refund_id = new_id("ref")
    refund = Refund(
        id=refund_id,
        tenant_id=ctx.tenant_id,
        payment_id=payment.id,
        amount=amount,
        currency=payment.currency,
        reason=reason[:500],
        status="pending_approval" if needs_approval else "submitting",
        idempotency_key=f"cb:{refund_id}:refund:v1",
        requested_by=_actor(ctx),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(refund)
    session.flush()
    record(
        session,
        ctx,
        "refund.request",
        RESOURCE,
        refund.id,
        diff={
            "payment_id": payment.id,
            "amount": amount,
            "reason": refund.reason,
            "status": refund.status,
            "needs_approval": needs_approval,
        },
    )
    events.emit(session, ctx.tenant_id, "refund.created", events.refund_data(refund), ctx.now)
    if not needs_approval:
        _submit_later(session, refund, ctx.now)
    return refund


def approve_refund(session: Session, ctx: Ctx, refund_id: str) -> Refund:
    refund = get_refund(session, ctx, refund_id, lock=True)
    if refund.status != "pending_approval":
        raise RefundStateError(f"A {refund.status} refund cannot be approved.".replace("_", " "))
    if refund.requested_by == _actor(ctx):
        raise SelfApprovalError("The person who asked for a refund cannot approve it.")
    payment = session.get(Payment, refund.payment_id, with_for_update=True)
    assert payment is not None
    if payment.disputed:
        raise ChargeDisputedError("The charge is disputed; it cannot be refunded.")
    if refund.amount > refundable(session, payment, besides=refund.id):
        raise InvalidInputError.one(
            "amount", "is more than can still be refunded", "above_refundable"
        )
    refund.status, refund.approved_by, refund.approved_at = "submitting", _actor(ctx), ctx.now
    refund.updated_at = ctx.now
    record(
        session,
        ctx,
        "refund.approve",
        RESOURCE,
        refund.id,
        diff={"status": ["pending_approval", "submitting"], "requested_by": refund.requested_by},
    )
    _submit_later(session, refund, ctx.now)
    return refund


def reject_refund(session: Session, ctx: Ctx, refund_id: str, reason: str) -> Refund:
    refund = get_refund(session, ctx, refund_id, lock=True)
    if refund.status != "pending_approval":
        raise RefundStateError(f"A {refund.status} refund cannot be rejected.".replace("_", " "))
    refund.status, refund.rejected_by, refund.rejected_at = "rejected", _actor(ctx), ctx.now
    refund.rejection_reason, refund.updated_at = reason.strip()[:500], ctx.now
    record(
        session,
        ctx,
        "refund.reject",
        RESOURCE,
        refund.id,
        diff={"status": ["pending_approval", "rejected"], "reason": refund.rejection_reason},
    )
    return refund


def _submit_later(session: Session, refund: Refund, now: datetime) -> None:
    queue.enqueue(
        session,
        SUBMIT_KIND,
        {"refund_id": refund.id},
        now=now,
        tenant_id=refund.tenant_id,
        run_at=now + SUBMIT_SAFETY_NET,
        dedupe_key=f"{SUBMIT_KIND}:{refund.id}",
    )


def submit(db: Database, settings: Settings, refund_id: str, now: datetime) -> Refund | None:
    """Send a ``submitting`` refund to Stripe (no transaction open during the call).
    Stripe unreachable: PaymentProviderUnavailableError, the refund stays
    ``submitting`` and the next try reuses the key. Stripe refusing: ``failed``."""
    with db.read() as session:
        refund = session.get(Refund, refund_id)
        if refund is None or refund.status != "submitting":
            return refund
        payment = session.get(Payment, refund.payment_id)
        assert payment is not None and payment.stripe_payment_intent_id is not None
        integration = stripe_api.stripe_integration(session, refund.tenant_id)
        if integration is None:
            raise StripeRefusedError(
                "stripe refunds.create: no enabled Stripe integration",
                integration="stripe",
                status_code=None,
                code=None,
                param=None,
            )
        acct = stripe_api.account(db, settings, integration)
        intent_id, amount, key = (
            payment.stripe_payment_intent_id,
            refund.amount,
            refund.idempotency_key,
        )
    try:
        made = stripe_api.create_refund(
            acct,
            payment_intent=intent_id,
            amount=amount,
            idempotency_key=key,
            metadata={"refund_id": refund_id, "payment_id": payment.id},
        )
    except (StripeRefusedError, ChargeDisputedError, InvalidInputError) as exc:
        with db.write() as session:
            row = session.get(Refund, refund_id, with_for_update=True)
            assert row is not None
            if row.status == "submitting":
                row.status, row.updated_at = "failed", now
                row.failure_message = f"Stripe refused the refund ({type(exc).__name__})"
                record(
                    session,
                    Ctx.system(row.tenant_id, "stripe", now),
                    "refund.failed",
                    RESOURCE,
                    row.id,
                    diff={"status": ["submitting", "failed"]},
                )
            session.flush()  # expunging unflushed changes would drop them
            session.expunge(row)
        return row
    with db.write() as session:
        row = session.get(Refund, refund_id, with_for_update=True)
        assert row is not None
        row.stripe_refund_id = row.stripe_refund_id or made.id
        _move(session, row, _FROM_STRIPE.get(made.status, "pending"), now)
        session.flush()  # expunging unflushed changes would drop them
        session.expunge(row)
    return row


def _move(session: Session, refund: Refund, status: str, now: datetime) -> None:
    if (
        status == refund.status
        or _RANK[status] < _RANK[refund.status]
        or refund.status == "rejected"
    ):
        return
    before, refund.status, refund.updated_at = refund.status, status, now
    session.flush()
    record(
        session,
        Ctx.system(refund.tenant_id, "stripe", now),
        f"refund.{status}",
        RESOURCE,
        refund.id,
        diff={"status": [before, status]},
    )


def sync_from_stripe(
    session: Session,
    payment: Payment,
    seen: list[stripe_api.StripeRefund],
    now: datetime,
    *,
    book: bool,
) -> None:
    """Apply Stripe's refund objects of ``payment``'s charge: our rows move forward;
    with ``book`` (on ``charge.refunded``), succeeded ones are posted to the ledger."""
    for item in seen:
        if item.payment_intent and item.payment_intent != payment.stripe_payment_intent_id:
            continue
        ours = session.scalars(
            sa.select(Refund)
            .where(
                Refund.tenant_id == payment.tenant_id,
                Refund.payment_id == payment.id,
                sa.or_(
                    Refund.stripe_refund_id == item.id,
                    Refund.id == item.metadata.get("refund_id", ""),
                ),
            )
            .with_for_update()
        ).first()
        if ours is not None:
            ours.stripe_refund_id = ours.stripe_refund_id or item.id
            _move(session, ours, _FROM_STRIPE.get(item.status, "pending"), now)
        refund_id = ours.id if ours is not None else None
        key = f"stripe:refund:{item.id}"
        if item.status == "succeeded" and book:
            ledger.post(
                session,
                ledger.Posting(
                    payment.tenant_id,
                    payment.patient_id,
                    "refund",
                    item.amount,
                    item.currency,
                    key,
                    "Refund",
                    now,
                    invoice_id=payment.invoice_id,
                    payment_id=payment.id,
                    refund_id=refund_id,
                    booking_id=payment.booking_id,
                ),
                by="system:stripe",
                now=now,
            )
        elif item.status in ("failed", "canceled") and _booked(session, payment.tenant_id, key):
            ledger.post(
                session,
                ledger.Posting(
                    payment.tenant_id,
                    payment.patient_id,
                    "adjustment",
                    -item.amount,
                    item.currency,
                    f"{key}:reversed",
                    "Refund reversed by Stripe",
                    now,
                    payment_id=payment.id,
                    refund_id=refund_id,
                ),
                by="system:stripe",
                now=now,
            )


def _booked(session: Session, tenant_id: str, source_key: str) -> bool:
    found = session.scalar(
        sa.select(LedgerEntry.id).where(
            LedgerEntry.tenant_id == tenant_id, LedgerEntry.source_key == source_key
        )
    )
    return found is not None
