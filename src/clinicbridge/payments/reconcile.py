"""Background jobs that make payments converge whatever was lost on the way.

* ``payments.reconcile`` (enqueued with every payment, due two minutes later; and by the
  five-minute sweep for payments still open): a payment still ``creating`` (its request
  died before or after reaching Stripe) is created again with the same idempotency key;
  an open one is compared with the intent (or session) as Stripe has it now, which
  also covers a webhook that never arrived. Once its booking's hold is gone, an open
  payment is cancelled at Stripe.
* ``payments.cancel_at_stripe``: cancel the intent (or expire the session) of a payment
  whose slot was released, so the patient can no longer pay for it. If Stripe says it
  was paid meanwhile, the payment is ``succeeded`` and flagged for staff.
* a booking-change hook (``scheduling.events.on_change``): a booking cancelled or
  expired enqueues the cancel of its open payments, in the change's transaction.
* ``payments.submit_refund``: send a ``submitting`` refund (same key every time).

Every handler may run twice: each step checks the state it is about to change.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.jobs import queue
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.payments import checkout, lifecycle, refunds, stripe_api
from clinicbridge.payments.errors import StripeRefusedError
from clinicbridge.payments.models import OPEN_PAYMENT_STATUSES, Payment
from clinicbridge.scheduling import events as booking_events
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings

SWEEP_KIND = "payments.reconcile_sweep"
SWEEP_AGE = timedelta(minutes=2)
SWEEP_BATCH = 500


def _settings(job: JobContext) -> Settings:
    if job.settings is None:
        raise RuntimeError("payments jobs need the service settings (master key file)")
    return job.settings


def _account(job: JobContext, payment: Payment) -> stripe_api.Account | None:
    with job.db.read() as session:
        integration = stripe_api.stripe_integration(session, payment.tenant_id)
        if integration is None or integration.id != payment.integration_id:
            return None
        return stripe_api.account(job.db, _settings(job), integration)


def _load(job: JobContext, payment_id: str) -> tuple[Payment, bool] | None:
    """The payment (detached) and whether its booking still holds the slot for it."""
    with job.db.read() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            return None
        booking = session.get(Booking, payment.booking_id) if payment.booking_id else None
        # a card-present payment is taken at the desk, not for a held slot
        held = (
            booking is None
            or booking.status == "pending_payment"
            or payment.method == "card_present"
        )
        session.expunge(payment)
        return payment, held


@registry.handler(lifecycle.RECONCILE_KIND, max_attempts=10)
def reconcile(job: JobContext) -> None:
    loaded = _load(job, str(job.payload["payment_id"]))
    if loaded is None or loaded[0].status not in (*OPEN_PAYMENT_STATUSES, "failed"):
        return
    payment, held = loaded
    if payment.status == "creating":
        checkout.start(job.db, _settings(job), payment.tenant_id, payment.id, job.now())
        loaded = _load(job, payment.id)
        assert loaded is not None
        payment, held = loaded
    acct = _account(job, payment)
    if acct is None:
        return
    if payment.stripe_checkout_session_id:
        made = stripe_api.retrieve_checkout_session(acct, payment.stripe_checkout_session_id)
        seen = lifecycle.Observed.of_session(
            {
                "payment_status": made.payment_status,
                "status": made.status,
                "amount_total": made.amount_total,
                "payment_intent": made.payment_intent,
            }
        )
    elif payment.stripe_payment_intent_id:
        intent = stripe_api.retrieve_payment_intent(acct, payment.stripe_payment_intent_id)
        seen = lifecycle.Observed.of_intent(
            {
                "id": intent.id,
                "status": intent.status,
                "amount_received": intent.amount_received,
                "latest_charge": intent.latest_charge,
            }
        )
    else:
        return
    with job.db.write() as session:
        row = session.get(Payment, payment.id, with_for_update=True)
        if row is None:
            return
        lifecycle.apply(session, row, seen, job.now())
        if row.status in OPEN_PAYMENT_STATUSES and not held:
            lifecycle.cancel_at_stripe_later(session, row, job.now())


@registry.handler(lifecycle.CANCEL_KIND, max_attempts=10)
def cancel_at_stripe(job: JobContext) -> None:
    loaded = _load(job, str(job.payload["payment_id"]))
    if loaded is None:
        return
    payment = loaded[0]
    if payment.status in lifecycle.TERMINAL:
        return
    acct = _account(job, payment)
    if acct is None:
        return
    key = f"cb:{payment.id}:cancel:v1"
    seen: lifecycle.Observed | None = None
    try:
        if payment.stripe_checkout_session_id:
            stripe_api.expire_checkout_session(
                acct, payment.stripe_checkout_session_id, idempotency_key=key
            )
            seen = lifecycle.Observed("canceled", "session_expired")
        elif payment.stripe_payment_intent_id:
            stripe_api.cancel_payment_intent(
                acct, payment.stripe_payment_intent_id, idempotency_key=key
            )
            seen = lifecycle.Observed(
                "canceled", "canceled", intent_id=payment.stripe_payment_intent_id
            )
        else:
            seen = lifecycle.Observed("canceled", "never_created")
    except StripeRefusedError:
        seen = None  # already paid or already cancelled: ask Stripe what it is
    if seen is None:
        with job.db.write() as session:
            queue.enqueue(
                session,
                lifecycle.RECONCILE_KIND,
                {"payment_id": payment.id},
                now=job.now(),
                tenant_id=payment.tenant_id,
                dedupe_key=f"{lifecycle.RECONCILE_KIND}:{payment.id}:after-cancel",
            )
        return
    with job.db.write() as session:
        row = session.get(Payment, payment.id, with_for_update=True)
        if row is not None:
            lifecycle.apply(session, row, seen, job.now())


@booking_events.on_change
def on_booking_changed(session: Session, ctx: Ctx, booking: Booking, action: str) -> None:
    """In the change's own transaction: a booking cancelled or expired cancels its open
    payments at Stripe (by a job, after commit). Other changes cost nothing here."""
    if action not in ("cancelled", "expired"):
        return
    open_payments = session.scalars(
        sa.select(Payment).where(
            Payment.tenant_id == booking.tenant_id,
            Payment.booking_id == booking.id,
            Payment.status.in_((*OPEN_PAYMENT_STATUSES, "failed")),
        )
    ).all()
    for payment in open_payments:
        lifecycle.cancel_at_stripe_later(session, payment, ctx.now)


@registry.handler(refunds.SUBMIT_KIND, max_attempts=10)
def submit_refund(job: JobContext) -> None:
    refunds.submit(job.db, _settings(job), str(job.payload["refund_id"]), job.now())


@registry.handler(SWEEP_KIND, max_attempts=3)
def sweep(job: JobContext) -> None:
    """Periodic: reconcile payments that stayed open (a lost webhook, a dead job)."""
    now = job.now()
    with job.db.write() as session:
        stale = session.execute(
            sa.select(Payment.id, Payment.tenant_id)
            .where(Payment.status.in_(OPEN_PAYMENT_STATUSES), Payment.updated_at < now - SWEEP_AGE)
            .order_by(Payment.updated_at)
            .limit(SWEEP_BATCH)
        ).all()
        queue.enqueue_many(
            session,
            [
                queue.NewJob(
                    lifecycle.RECONCILE_KIND,
                    {"payment_id": pid},
                    tenant_id=tid,
                    dedupe_key=f"{lifecycle.RECONCILE_KIND}:{pid}",
                )
                for pid, tid in stale
            ],
            now=now,
        )


registry.periodic(PeriodicTask(name="payments-reconcile", cron="*/5 * * * *", kind=SWEEP_KIND))
