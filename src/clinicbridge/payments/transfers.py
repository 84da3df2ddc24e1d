"""Transfers to providers after completed appointments (Stripe Connect).

When a booking becomes ``completed``, the change's own transaction enqueues
``payments.connect_transfers`` (only when the provider has a connected account and
the service a payout rule: other clinics pay one indexed query and no job). A periodic
sweep enqueues it too for completed bookings whose payment succeeded later (a card
taken at the front desk after the visit) and has no transfer yet.

The job sends each succeeded payment of the booking its provider's share
(``connect.provider_share`` of what was received less what was refunded) once:

1. one transaction inserts the ``transfers`` row (``submitting``), unique per payment,
   with the idempotency key ``cb:{payment_id}:tr:v1``;
2. ``POST /v1/transfers`` (``destination`` the provider's account, ``source_transaction``
   the payment's charge, so the money follows the charge), no transaction open;
3. a short transaction records Stripe's transfer id (``paid``). Stripe refusing it (a
   value such as the amount, too) is ``failed`` with Stripe's code; Stripe unreachable
   fails the job, whose retry sends the same key: Stripe answers the first transfer
   again.

A refusal about the account's state (the ``transfers`` capability not active yet) is
resent as a new attempt, under a new key, once the account can receive transfers
(``transfer_retries``). Such a refusal also marks the account as not able (Stripe's
answer is newer than what we knew), unless Stripe told us since we asked that it is
able: then the transfer is resent at once, since no later event would resend it.

A refund afterwards (``charge.refunded``) reverses the provider's part of it
(``POST /v1/transfers/{id}/reversals``); fully reversed, the transfer is ``reversed``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs import queue
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.payments import stripe_api, stripe_connect, transfer_retries
from clinicbridge.payments.connect import provider_share
from clinicbridge.payments.connect_models import ConnectedAccount, ServicePayoutRule, Transfer
from clinicbridge.payments.errors import StripeRefusedError
from clinicbridge.payments.models import Payment
from clinicbridge.scheduling import events as booking_events
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings

TRANSFER_KIND = "payments.connect_transfers"
SWEEP_KIND = "payments.connect_transfers_sweep"
SWEEP_WINDOW = timedelta(days=30)
SWEEP_BATCH = 500
RESOURCE = "transfer"


def _eligible(session: Session, tenant_id: str, provider_id: str, service_id: str) -> bool:
    return (
        session.scalar(
            sa.select(sa.literal(1))
            .select_from(ConnectedAccount)
            .join(ServicePayoutRule, ServicePayoutRule.service_id == service_id)
            .where(
                ConnectedAccount.tenant_id == tenant_id,
                ConnectedAccount.provider_id == provider_id,
                ServicePayoutRule.tenant_id == tenant_id,
            )
            .limit(1)
        )
        is not None
    )


def enqueue_for(session: Session, tenant_id: str, booking_id: str, now: datetime) -> None:
    queue.enqueue(
        session,
        TRANSFER_KIND,
        {"booking_id": booking_id},
        now=now,
        tenant_id=tenant_id,
        dedupe_key=f"{TRANSFER_KIND}:{booking_id}",
    )


@booking_events.on_change
def on_booking_changed(session: Session, ctx: Ctx, booking: Booking, action: str) -> None:
    if action != "completed":
        return
    if _eligible(session, booking.tenant_id, booking.provider_id, booking.service_id):
        enqueue_for(session, booking.tenant_id, booking.id, ctx.now)


def prepare(session: Session, booking_id: str, now: datetime) -> list[str]:
    """Step 1: a ``submitting`` transfer for each succeeded payment of the completed
    booking that has none; returns every transfer of the booking still to send."""
    booking = session.get(Booking, booking_id)
    if booking is None or booking.status != "completed":
        return []
    account = session.scalars(
        sa.select(ConnectedAccount).where(
            ConnectedAccount.tenant_id == booking.tenant_id,
            ConnectedAccount.provider_id == booking.provider_id,
        )
    ).first()
    rule = session.get(ServicePayoutRule, booking.service_id)
    if account is None or rule is None or rule.tenant_id != booking.tenant_id:
        return []
    done = sa.select(Transfer.payment_id).where(Transfer.payment_id == Payment.id)
    payments = session.scalars(
        sa.select(Payment)
        .where(
            Payment.tenant_id == booking.tenant_id,
            Payment.booking_id == booking.id,
            Payment.status == "succeeded",
            ~sa.exists(done),
        )
        .order_by(Payment.id)
    ).all()
    for payment in payments:
        share = provider_share(payment.amount_received - payment.amount_refunded, rule)
        if share <= 0:
            continue
        transfer = Transfer(
            id=new_id("trf"),
            tenant_id=booking.tenant_id,
            booking_id=booking.id,
            payment_id=payment.id,
            connected_account_id=account.id,
            provider_id=booking.provider_id,
            amount=share,
            amount_reversed=0,
            currency=payment.currency,
            status="submitting",
            attempt=1,
            idempotency_key=transfer_retries.key_for(payment.id, 1),
            created_at=now,
            updated_at=now,
        )
        session.add(transfer)
        session.flush()
        record_system(
            session, booking.tenant_id, "transfer.create", RESOURCE, transfer.id, now=now,
            diff={"amount": share, "currency": payment.currency, "payment_id": payment.id,
                  "provider_id": booking.provider_id},
        )  # fmt: skip
    return list(
        session.scalars(
            sa.select(Transfer.id)
            .where(Transfer.booking_id == booking.id, Transfer.status == "submitting")
            .order_by(Transfer.id)
        )
    )


def submit(db: Database, settings: Settings, transfer_id: str, now: datetime) -> None:
    """Steps 2 and 3 for one ``submitting`` transfer (the same key every time)."""
    with db.read() as session:
        transfer = session.get(Transfer, transfer_id)
        if transfer is None or transfer.status != "submitting":
            return
        account = session.get(ConnectedAccount, transfer.connected_account_id)
        payment = session.get(Payment, transfer.payment_id)
        integration = stripe_api.stripe_integration(session, transfer.tenant_id)
        if account is None or payment is None or integration is None:
            return
        acct = stripe_api.account(db, settings, integration)
        key = transfer.idempotency_key  # this attempt's key, on every try
        session.expunge_all()
    try:
        made = stripe_connect.create_transfer(
            acct,
            amount=transfer.amount,
            currency=transfer.currency,
            destination=account.stripe_account_id,
            source_transaction=payment.stripe_charge_id,
            transfer_group=f"booking:{transfer.booking_id}" if transfer.booking_id else None,
            metadata={
                "transfer_id": transfer.id,
                "payment_id": payment.id,
                "booking_id": transfer.booking_id or "",
                "provider_id": transfer.provider_id,
            },
            idempotency_key=key,
        )
        status, stripe_id, code = "paid", made.id, None
    except StripeRefusedError as exc:
        status, stripe_id, code = "failed", None, exc.code or f"http_{exc.status_code}"
    except InvalidInputError as exc:  # Stripe refused a value (amount, currency): final
        status, stripe_id, code = "failed", None, exc.errors[0].code[:64]
    with db.write() as session:
        # The account first, then the transfer: the order account.updated locks them in.
        holder = session.get(ConnectedAccount, account.id, with_for_update=True)
        row = session.get(Transfer, transfer_id, with_for_update=True)
        if row is None or row.status != "submitting" or row.idempotency_key != key:
            return  # recorded by another run already
        row.status, row.stripe_transfer_id, row.failure_code = status, stripe_id, code
        row.updated_at = now
        record_system(
            session, row.tenant_id, f"transfer.{status}", RESOURCE, row.id, now=now,
            actor_id="stripe", diff={"status": ["submitting", status], "failure_code": code,
                                     "attempt": row.attempt},
        )  # fmt: skip
        if holder is not None and transfer_retries.about_account(code) and holder.transfers_active:
            if holder.updated_at >= now:
                transfer_retries.resume_one(session, row, now)  # able since we asked
            else:
                holder.transfers_active = False


@registry.handler(TRANSFER_KIND, max_attempts=10)
def transfer_for_booking(job: JobContext) -> None:
    if job.settings is None:
        raise RuntimeError("transfers need the service settings (master key file)")
    with job.db.write() as session:
        pending = prepare(session, str(job.payload["booking_id"]), job.now())
    for transfer_id in pending:
        submit(job.db, job.settings, transfer_id, job.now())


@registry.handler(transfer_retries.RETRY_KIND, max_attempts=10)
def retry_transfer(job: JobContext) -> None:
    """A refused transfer's next attempt (``transfer_retries.resume``)."""
    if job.settings is None:
        raise RuntimeError("transfers need the service settings (master key file)")
    submit(job.db, job.settings, str(job.payload["transfer_id"]), job.now())


@registry.handler(SWEEP_KIND, max_attempts=3)
def sweep(job: JobContext) -> None:
    """Periodic: completed bookings with a recently succeeded payment and no transfer."""
    now = job.now()
    done = sa.select(Transfer.payment_id).where(Transfer.payment_id == Payment.id)
    with job.db.write() as session:
        rows = session.execute(
            sa.select(Booking.id, Booking.tenant_id)
            .join(Payment, Payment.booking_id == Booking.id)
            .join(
                ConnectedAccount,
                sa.and_(
                    ConnectedAccount.tenant_id == Booking.tenant_id,
                    ConnectedAccount.provider_id == Booking.provider_id,
                ),
            )
            .join(ServicePayoutRule, ServicePayoutRule.service_id == Booking.service_id)
            .where(
                Booking.status == "completed",
                Payment.status == "succeeded",
                Payment.succeeded_at >= now - SWEEP_WINDOW,
                sa.or_(
                    ServicePayoutRule.provider_share_bps.is_(None),
                    ServicePayoutRule.provider_share_bps > 0,
                ),
                ~sa.exists(done),
            )
            .distinct()
            .limit(SWEEP_BATCH)
        ).all()
        queue.enqueue_many(
            session,
            [
                queue.NewJob(
                    TRANSFER_KIND,
                    {"booking_id": bid},
                    tenant_id=tid,
                    dedupe_key=f"{TRANSFER_KIND}:{bid}",
                )
                for bid, tid in rows
            ],
            now=now,
        )


registry.periodic(
    PeriodicTask(name="payments-connect-transfers", cron="*/10 * * * *", kind=SWEEP_KIND)
)


def on_charge_refunded(event: StoredEvent, job: JobContext) -> None:
    """A refund takes the provider's part of it back: the transfer is reversed down to
    its share of what the payment still keeps (``amount * kept // received``). The key
    names the refunded total, so each refund reverses once, whichever event tells it."""
    data = event.payload.get("data")
    charge = data.get("object") if isinstance(data, dict) else None
    if not isinstance(charge, dict) or job.settings is None:
        return
    intent = charge.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    if not isinstance(intent_id, str):
        return
    with job.db.read() as session:
        payment = session.scalars(
            sa.select(Payment).where(
                Payment.tenant_id == event.tenant_id, Payment.stripe_payment_intent_id == intent_id
            )
        ).first()
        transfer = (
            session.scalars(
                sa.select(Transfer).where(
                    Transfer.payment_id == payment.id, Transfer.status == "paid"
                )
            ).first()
            if payment is not None
            else None
        )
        if payment is None or transfer is None or not transfer.stripe_transfer_id:
            return
        received = payment.amount_received
        refunded = max(payment.amount_refunded, int(charge.get("amount_refunded") or 0))
        keep = transfer.amount * max(0, received - refunded) // received if received else 0
        owed = transfer.amount - keep - transfer.amount_reversed
        integration = stripe_api.stripe_integration(session, event.tenant_id)
        if owed <= 0 or integration is None:
            return
        acct = stripe_api.account(job.db, job.settings, integration)
        transfer_id, stripe_id = transfer.id, transfer.stripe_transfer_id
    reversed_amount = stripe_connect.reverse_transfer(
        acct,
        stripe_id,
        amount=owed,
        metadata={"transfer_id": transfer_id, "payment_id": payment.id},
        idempotency_key=f"cb:{transfer_id}:rev:{refunded}",
    )
    now = job.now()
    with job.db.write() as session:
        row = session.get(Transfer, transfer_id, with_for_update=True)
        if row is None or row.amount - keep - row.amount_reversed <= 0:
            return  # recorded by another run already
        row.amount_reversed += reversed_amount
        if row.amount_reversed >= row.amount:
            row.status = "reversed"
        row.updated_at = now
        record_system(
            session, row.tenant_id, "transfer.reverse", RESOURCE, row.id, now=now,
            actor_id="stripe", diff={"amount_reversed": row.amount_reversed},
        )  # fmt: skip


integrations.on("stripe", "charge.refunded")(on_charge_refunded)
