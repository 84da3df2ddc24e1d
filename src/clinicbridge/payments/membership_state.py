"""A membership takes its state from its Stripe Subscription, in one place.

Order of states, from the subscription object and its event, never the arrival order:
``state_key = [ended, event_created, current_period_start, status_rank]``, compared
left to right.

* ``ended`` first: a canceled (or ``incomplete_expired``) subscription never comes back
  at Stripe, so nothing overwrites it;
* then the ``created`` second of the event that carried the object;
* within one second, a later period (a renewal) is newer, then the status rank
  (``incomplete`` < ``trialing`` < ``active``/``past_due``/``paused`` < ``unpaid``);
* a full tie whose content differs (say ``cancel_at_period_end`` flipped twice in one
  second) is settled by reading the subscription from Stripe (``memberships_events``).

Stripe's answers to our own calls are applied at once and keep the key's
``event_created`` (they are newer than any event seen so far; a later event about a
later change still wins). Entering ``past_due`` or ``canceled`` publishes
``membership.past_due`` / ``membership.canceled`` to the clinic's webhook endpoints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.payments.membership_models import ENDED_STATUSES, Membership, MembershipPlan
from clinicbridge.payments.stripe_billing import Subscription
from clinicbridge.webhooks.outbound import publish

RESOURCE = "membership"
EVENT_TYPES = ("membership.past_due", "membership.canceled")
_RANK = {
    "creating": -1,
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 2,
    "paused": 2,
    "unpaid": 3,
    "canceled": 9,
    "incomplete_expired": 9,
}
_FIELDS = (
    "status",
    "plan_id",
    "current_period_end",
    "cancel_at_period_end",
    "trial_end",
    "canceled_at",
    "ended_at",
)


def key_of(sub: Subscription, created: int) -> list[int]:
    start = int(sub.current_period_start.timestamp()) if sub.current_period_start else 0
    return [1 if sub.status in ENDED_STATUSES else 0, created, start, _RANK.get(sub.status, 0)]


def stored_key(membership: Membership) -> list[int]:
    return list(membership.state_key or [0, 0, 0, -1])


def membership_data(membership: Membership) -> dict[str, Any]:
    """The outbound events' ``data``: ids and state, no patient details."""
    return {
        "id": membership.id,
        "patient_id": membership.patient_id,
        "plan_id": membership.plan_id,
        "status": membership.status,
        "current_period_end": membership.current_period_end.isoformat()
        if membership.current_period_end
        else None,
        "cancel_at_period_end": membership.cancel_at_period_end,
        "stripe_subscription_id": membership.stripe_subscription_id,
    }


def plan_of_price(session: Session, tenant_id: str, price_id: str | None) -> str | None:
    if price_id is None:
        return None
    return session.scalar(
        sa.select(MembershipPlan.id).where(
            MembershipPlan.tenant_id == tenant_id, MembershipPlan.stripe_price_id == price_id
        )
    )


def differs(session: Session, membership: Membership, sub: Subscription) -> bool:
    """Whether applying ``sub`` would change anything we keep."""
    return _wanted(session, membership, sub) != {f: getattr(membership, f) for f in _FIELDS}


def _wanted(session: Session, membership: Membership, sub: Subscription) -> dict[str, Any]:
    return {
        "status": sub.status,
        "plan_id": plan_of_price(session, membership.tenant_id, sub.price_id) or membership.plan_id,
        "current_period_end": sub.current_period_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "trial_end": sub.trial_end,
        "canceled_at": sub.canceled_at,
        "ended_at": sub.ended_at,
    }


def apply(
    session: Session,
    membership: Membership,
    sub: Subscription,
    key: list[int],
    now: datetime,
    *,
    ctx: Ctx | None = None,
) -> bool:
    """Make ``membership`` what ``sub`` says (the caller decided it is newer); audited
    (as ``ctx``, else the system acting for Stripe) when something changed."""
    membership.stripe_subscription_id = membership.stripe_subscription_id or sub.id
    membership.stripe_customer_id = membership.stripe_customer_id or sub.customer
    membership.stripe_item_id = sub.item_id or membership.stripe_item_id
    membership.latest_invoice_id = sub.latest_invoice or membership.latest_invoice_id
    membership.current_period_start = sub.current_period_start
    membership.state_key = key
    wanted = _wanted(session, membership, sub)
    diff = {
        name: [_plain(getattr(membership, name)), _plain(value)]
        for name, value in wanted.items()
        if getattr(membership, name) != value
    }
    if not diff:
        return False
    before = membership.status
    for name, value in wanted.items():
        setattr(membership, name, value)
    membership.updated_at = now
    session.flush()
    actor = ctx or Ctx.system(membership.tenant_id, "stripe", now)
    record(session, actor, "membership.update", RESOURCE, membership.id, diff=diff)
    entered(session, membership, before, now)
    return True


def entered(session: Session, membership: Membership, before: str, now: datetime) -> None:
    """Publish the outbound event of a status just entered, if it has one."""
    if membership.status == before:
        return
    kind = {"past_due": "membership.past_due", "canceled": "membership.canceled"}.get(
        membership.status
    )
    if kind is not None:
        publish(
            session,
            tenant_id=membership.tenant_id,
            event_type=kind,
            data=membership_data(membership),
            now=now,
        )


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value
