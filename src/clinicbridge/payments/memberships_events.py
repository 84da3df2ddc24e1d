"""Stripe Billing webhooks for memberships (beside ``stripe_events.on_billing_object``,
which keeps the raw objects):

* ``customer.subscription.*``: the membership takes the subscription's state when it
  is newer by ``membership_state``'s key; a full tie whose content differs is settled
  by reading the subscription from Stripe; an older event changes nothing;
* ``invoice.paid`` of a subscription invoice: the ledger gets a ``charge`` of the
  invoice's total (an ``adjustment`` when a downgrade's proration left a credit) and a
  ``payment`` of what was paid, with source keys ``stripe:invoice:{in_id}:charge`` /
  ``:payment``: replays and retries book once;
* ``invoice.payment_failed``: the membership is ``past_due`` (``membership.past_due``
  goes out), unless the invoice was paid meanwhile or newer state is known.

A subscription or invoice of no membership is an unmatched event (kept, alerted).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record_system
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from clinicbridge.payments import ledger, membership_state, stripe_api, stripe_billing
from clinicbridge.payments.membership_models import ENDED_STATUSES, Membership, MembershipPlan
from clinicbridge.payments.models import LedgerEntry
from clinicbridge.payments.stripe_events import CONNECTOR, _id, _object, unmatched

SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
)


def _find(
    session: Session, tenant_id: str, subscription_id: str | None, metadata: object
) -> Membership | None:
    """By Stripe's id first, then by our id in the subscription's metadata (an event
    can arrive before our own call recorded the id)."""
    if subscription_id:
        found = session.scalars(
            sa.select(Membership)
            .where(
                Membership.tenant_id == tenant_id,
                Membership.stripe_subscription_id == subscription_id,
            )
            .with_for_update()
        ).first()
        if found is not None:
            return found
    ours = metadata.get("membership_id") if isinstance(metadata, dict) else None
    if not ours:
        return None
    found = session.scalars(
        sa.select(Membership)
        .where(Membership.tenant_id == tenant_id, Membership.id == str(ours))
        .with_for_update()
    ).first()
    if found is None or found.stripe_subscription_id not in (None, subscription_id):
        return None
    return found


def on_subscription(event: StoredEvent, job: JobContext) -> None:
    obj = _object(event)
    if not obj:
        return
    sub = stripe_billing.Subscription.of(obj)
    created = int(event.payload.get("created") or 0)
    key = membership_state.key_of(sub, created)
    with job.db.write() as session:
        membership = _find(session, event.tenant_id, sub.id, obj.get("metadata"))
        if membership is None:
            unmatched(session, event, obj, job.now())
            return
        stored = membership_state.stored_key(membership)
        if key < stored:
            return  # older than what we applied
        if key > stored or not membership_state.differs(session, membership, sub):
            membership_state.apply(session, membership, sub, max(key, stored), job.now())
            return
        membership_id, integration_id = membership.id, event.integration_id
    # A full tie with other content: Stripe's current object says which is right.
    fresh = _retrieve(job, integration_id, sub.id)
    with job.db.write() as session:
        row = session.get(Membership, membership_id, with_for_update=True)
        if row is None:
            return
        stored = membership_state.stored_key(row)
        if stored[0] and fresh.status not in ENDED_STATUSES:
            return
        membership_state.apply(
            session, row, fresh, max(membership_state.key_of(fresh, stored[1]), stored), job.now()
        )


def _retrieve(job: JobContext, integration_id: str, sub_id: str) -> stripe_billing.Subscription:
    with job.db.read() as session:
        integration = session.get(Integration, integration_id)
    if integration is None or job.settings is None:
        raise RuntimeError("a subscription event needs the integration and the service settings")
    acct = stripe_api.account(job.db, job.settings, integration)
    return stripe_billing.retrieve_subscription(acct, sub_id)


def _subscription_of(invoice: dict[str, Any]) -> tuple[str | None, object]:
    details = invoice.get("subscription_details")
    metadata = details.get("metadata") if isinstance(details, dict) else None
    return _id(invoice.get("subscription")), metadata


def _booked(session: Session, tenant_id: str, source_key: str) -> bool:
    return (
        session.scalar(
            sa.select(LedgerEntry.id).where(
                LedgerEntry.tenant_id == tenant_id, LedgerEntry.source_key == source_key
            )
        )
        is not None
    )


def on_invoice_paid(event: StoredEvent, job: JobContext) -> None:
    invoice = _object(event)
    sub_id, metadata = _subscription_of(invoice)
    if not invoice or (sub_id is None and not metadata):
        return  # not a subscription invoice (stripe_events keeps the object)
    now = job.now()
    with job.db.write() as session:
        membership = _find(session, event.tenant_id, sub_id, metadata)
        if membership is None:
            unmatched(session, event, invoice, now)
            return
        plan = session.get(MembershipPlan, membership.plan_id)
        label = f"Membership: {plan.name}" if plan is not None else "Membership"
        currency = str(invoice.get("currency") or (plan.currency if plan else "")).lower()
        total, paid = int(invoice.get("total") or 0), int(invoice.get("amount_paid") or 0)
        paid_at = stripe_billing.when((invoice.get("status_transitions") or {}).get("paid_at"))
        base = f"stripe:invoice:{invoice['id']}"
        if total != 0:
            ledger.post(
                session,
                ledger.Posting(
                    membership.tenant_id,
                    membership.patient_id,
                    "charge" if total > 0 else "adjustment",
                    total,
                    currency,
                    f"{base}:charge",
                    label if total > 0 else f"{label} (credit for a plan change)",
                    paid_at or now,
                ),
                by="system:stripe",
                now=now,
            )
        if paid > 0:
            ledger.post(
                session,
                ledger.Posting(
                    membership.tenant_id,
                    membership.patient_id,
                    "payment",
                    -paid,
                    currency,
                    f"{base}:payment",
                    f"{label}: card payment",
                    paid_at or now,
                ),
                by="system:stripe",
                now=now,
            )
        if membership.latest_invoice_id is None:
            membership.latest_invoice_id = str(invoice["id"])


def on_invoice_failed(event: StoredEvent, job: JobContext) -> None:
    invoice = _object(event)
    sub_id, metadata = _subscription_of(invoice)
    if not invoice or (sub_id is None and not metadata):
        return
    now = job.now()
    created = int(event.payload.get("created") or 0)
    with job.db.write() as session:
        membership = _find(session, event.tenant_id, sub_id, metadata)
        if membership is None:
            unmatched(session, event, invoice, now)
            return
        if _booked(session, membership.tenant_id, f"stripe:invoice:{invoice['id']}:payment"):
            return  # paid after all (a retry succeeded): not past due
        stored = membership_state.stored_key(membership)
        if membership.status not in ("active", "trialing") or created <= stored[1]:
            # incomplete/ended/past due already, or state as new is known (the
            # subscription's own past_due update follows in any case)
            return
        before = membership.status
        membership.status, membership.updated_at = "past_due", now
        membership.state_key = [0, created, stored[2], 2]
        session.flush()
        record_system(
            session,
            membership.tenant_id,
            "membership.update",
            membership_state.RESOURCE,
            membership.id,
            now=now,
            actor_id="stripe",
            diff={"status": [before, "past_due"], "invoice": str(invoice["id"])},
        )
        membership_state.entered(session, membership, before, now)


for _type in SUBSCRIPTION_EVENTS:
    integrations.on(CONNECTOR, _type)(on_subscription)
integrations.on(CONNECTOR, "invoice.paid")(on_invoice_paid)
integrations.on(CONNECTOR, "invoice.payment_failed")(on_invoice_failed)
