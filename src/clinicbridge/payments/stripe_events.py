"""What Stripe posts to a clinic's ``stripe`` integration, once the inbox has verified
the ``Stripe-Signature`` and stored the event (handlers run in the inbox's job).

Every handler takes the state from the object the event carries (or, for refunds,
from Stripe's list of the charge's refunds), never from the order events arrive in,
and every ledger entry has a source key of Stripe's or our ids, so duplicates, replays
and any ordering converge on the same rows (see ``lifecycle`` and ``refunds``):

* ``payment_intent.*`` (created, processing, requires_action, succeeded,
  payment_failed, canceled) and ``checkout.session.completed`` / ``.expired``: the
  payment's state;
* ``charge.refunded``: the charge's refunds are listed at Stripe and posted;
  ``refund.created`` / ``refund.updated`` / ``refund.failed`` / ``charge.refund.updated``
  move our refund rows (and reverse a refund that failed after succeeding);
* ``charge.dispute.created``: the payment is disputed (no refunds), an ``adjustment``
  of the disputed amount; ``charge.dispute.closed`` won: reversed;
* ``invoice.paid``, ``invoice.payment_failed``, ``customer.subscription.*``: the object's
  latest state is stored (``StripeObject``; newer ``created`` wins) for memberships.

An event about an object ClinicBridge does not know is stored as an
``UnmatchedStripeEvent`` and raises the ``stripe_unmatched_events`` alert on the
integration: never dropped.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.ids import new_id
from clinicbridge.integrations.models import Alert, Integration
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from clinicbridge.payments import ledger, stripe_api
from clinicbridge.payments.lifecycle import Observed, apply, find_payment
from clinicbridge.payments.models import LedgerEntry, Payment, StripeObject, UnmatchedStripeEvent
from clinicbridge.payments.refunds import sync_from_stripe

log = logging.getLogger("clinicbridge.payments")
CONNECTOR = "stripe"
UNMATCHED_RULE = "stripe_unmatched_events"
INTENT_EVENTS = (
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
)
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
BILLING_EVENTS = (
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
)


def _object(event: StoredEvent) -> dict[str, Any]:
    data = event.payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) and isinstance(obj.get("id"), str) else {}


def _id(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _ours(
    session: Session,
    event: StoredEvent,
    obj: dict[str, Any],
    now: datetime,
    *,
    intent_id: str | None = None,
    session_id: str | None = None,
) -> Payment | None:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    found = find_payment(
        session,
        event.tenant_id,
        intent_id=intent_id,
        session_id=session_id,
        payment_id=str((metadata or {}).get("payment_id") or "") or None,
    )
    if found is None:
        unmatched(session, event, obj, now)
    return found


def unmatched(session: Session, event: StoredEvent, obj: dict[str, Any], now: datetime) -> None:
    """Keep the event for staff, and raise (or refresh) the integration's alert."""
    exists = session.scalar(
        sa.select(UnmatchedStripeEvent.id).where(UnmatchedStripeEvent.webhook_event_id == event.id)
    )
    if exists is None:
        amount = obj.get("amount") if isinstance(obj.get("amount"), int) else None
        session.add(
            UnmatchedStripeEvent(
                id=new_id("use"),
                tenant_id=event.tenant_id,
                integration_id=event.integration_id,
                webhook_event_id=event.id,
                stripe_event_id=event.provider_event_id,
                type=event.type,
                object_id=_id(obj.get("id")),
                amount=amount,
                currency=str(obj["currency"])[:3] if obj.get("currency") else None,
                status="unmatched",
                created_at=now,
            )
        )
    count = session.scalar(
        sa.select(sa.func.count()).where(
            UnmatchedStripeEvent.integration_id == event.integration_id,
            UnmatchedStripeEvent.status == "unmatched",
        )
    )
    alert = session.scalars(
        sa.select(Alert).where(
            Alert.tenant_id == event.tenant_id,
            Alert.rule == UNMATCHED_RULE,
            Alert.subject_id == event.integration_id,
            Alert.status == "open",
        )
    ).first()
    details = {
        "unmatched_events": int(count or 0) + (1 if exists is None else 0),
        "last_type": event.type,
    }
    if alert is None:
        session.add(
            Alert(
                id=new_id("alr"),
                tenant_id=event.tenant_id,
                subject_type="integration",
                subject_id=event.integration_id,
                rule=UNMATCHED_RULE,
                status="open",
                details=details,
                opened_at=now,
                last_seen_at=now,
            )
        )
    else:
        alert.details, alert.last_seen_at = details, now
    log.warning(
        "stripe event for an unknown object",
        extra={"fields": {"event_id": event.id, "type": event.type}},
    )


def on_intent(event: StoredEvent, job: JobContext) -> None:
    obj = _object(event)
    if not obj or obj.get("invoice"):
        return  # a Stripe invoice's intent (memberships): its invoice.* events count
    with job.db.write() as session:
        payment = _ours(session, event, obj, job.now(), intent_id=obj["id"])
        if payment is not None:
            failed = event.type == "payment_intent.payment_failed"
            apply(session, payment, Observed.of_intent(obj, failed=failed), job.now())


def on_session(event: StoredEvent, job: JobContext) -> None:
    obj = _object(event)
    if not obj:
        return
    with job.db.write() as session:
        payment = _ours(
            session,
            event,
            obj,
            job.now(),
            session_id=obj["id"],
            intent_id=_id(obj.get("payment_intent")),
        )
        if payment is not None:
            apply(session, payment, Observed.of_session(obj), job.now())


def on_charge_refunded(event: StoredEvent, job: JobContext) -> None:
    """The charge's refunds as Stripe lists them now (the event may be stale or out of
    order; the list is not), each posted once."""
    charge = _object(event)
    intent_id = _id(charge.get("payment_intent"))
    if not charge or intent_id is None:
        return
    with job.db.write() as session:
        payment = _ours(session, event, charge, job.now(), intent_id=intent_id)
        if payment is None:
            return
        payment.amount_refunded = max(
            payment.amount_refunded, int(charge.get("amount_refunded") or 0)
        )
        payment_id = payment.id
        integration = session.get(Integration, event.integration_id)
    if integration is None or job.settings is None:
        raise RuntimeError("charge.refunded needs the integration and the service settings")
    seen = stripe_api.list_refunds(
        stripe_api.account(job.db, job.settings, integration), str(charge["id"])
    )
    with job.db.write() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment is not None:
            sync_from_stripe(session, payment, seen, job.now(), book=True)


def on_refund(event: StoredEvent, job: JobContext) -> None:
    obj = _object(event)
    intent_id = _id(obj.get("payment_intent"))
    if not obj or intent_id is None:
        return
    with job.db.write() as session:
        payment = find_payment(session, event.tenant_id, intent_id=intent_id)
        if payment is None:
            unmatched(session, event, obj, job.now())
            return
        sync_from_stripe(session, payment, [stripe_api.StripeRefund.of(obj)], job.now(), book=False)


def on_dispute(event: StoredEvent, job: JobContext) -> None:
    """Created: disputed, +amount; closed as won: -amount and refundable again. Both keys
    are posted by a ``won`` closure, so it converges even when it comes first."""
    dispute = _object(event)
    intent_id = _id(dispute.get("payment_intent"))
    if not dispute or intent_id is None:
        return
    now = job.now()
    with job.db.write() as session:
        payment = _ours(session, event, dispute, now, intent_id=intent_id)
        if payment is None:
            return
        amount = int(dispute.get("amount") or 0)
        key = f"stripe:dispute:{dispute['id']}"
        if amount > 0:
            ledger.post(
                session,
                ledger.Posting(
                    payment.tenant_id,
                    payment.patient_id,
                    "adjustment",
                    amount,
                    payment.currency,
                    key,
                    "Card payment disputed",
                    now,
                    payment_id=payment.id,
                    booking_id=payment.booking_id,
                ),
                by="system:stripe",
                now=now,
            )
        won = dispute.get("status") == "won"
        if won and amount > 0:
            ledger.post(
                session,
                ledger.Posting(
                    payment.tenant_id,
                    payment.patient_id,
                    "adjustment",
                    -amount,
                    payment.currency,
                    f"{key}:won",
                    "Dispute won",
                    now,
                    payment_id=payment.id,
                    booking_id=payment.booking_id,
                ),
                by="system:stripe",
                now=now,
            )
        already_won = session.scalar(
            sa.select(sa.func.count())
            .select_from(LedgerEntry)
            .where(
                LedgerEntry.tenant_id == payment.tenant_id,
                LedgerEntry.source_key == f"{key}:won",
            )
        )
        payment.disputed = not (won or already_won)
        payment.updated_at = now


def on_billing_object(event: StoredEvent, job: JobContext) -> None:
    """Keep the newest state of a Stripe invoice or subscription."""
    obj = _object(event)
    if not obj:
        return
    created = int(event.payload.get("created") or 0)
    with job.db.write() as session:
        row = session.scalars(
            sa.select(StripeObject)
            .where(
                StripeObject.integration_id == event.integration_id,
                StripeObject.stripe_id == obj["id"],
            )
            .with_for_update()
        ).first()
        if row is not None and row.event_created > created:
            return  # an older event about an object we know better already
        if row is None:
            row = StripeObject(
                id=new_id("sob"),
                tenant_id=event.tenant_id,
                integration_id=event.integration_id,
                stripe_id=obj["id"],
            )
            session.add(row)
        row.object_type = str(obj.get("object") or event.type.split(".")[0])[:32]
        row.status = str(obj.get("status"))[:32] if obj.get("status") else None
        row.customer = _id(obj.get("customer"))
        row.data, row.event_created, row.last_event_id = obj, created, event.provider_event_id
        row.updated_at = job.now()


for _type in INTENT_EVENTS:
    integrations.on(CONNECTOR, _type)(on_intent)
for _type in (
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
):
    integrations.on(CONNECTOR, _type)(on_session)
integrations.on(CONNECTOR, "charge.refunded")(on_charge_refunded)
for _type in REFUND_EVENTS:
    integrations.on(CONNECTOR, _type)(on_refund)
for _type in ("charge.dispute.created", "charge.dispute.closed"):
    integrations.on(CONNECTOR, _type)(on_dispute)
for _type in BILLING_EVENTS:
    integrations.on(CONNECTOR, _type)(on_billing_object)
