"""Patient memberships: a plan billed by a Stripe Subscription.

Joining keeps SQLite's single writer free while Stripe is called, like pay at booking:

1. one transaction: the ``creating`` membership with its key ``cb:{membership_id}:sub:v1``
   (audited ``membership.create``); committed;
2. with no transaction open: the plan's Price (``membership_plans.ensure_price``), the
   patient's Customer (made once per integration), the Subscription
   (``payment_behavior=default_incomplete``, ``trial_period_days`` of the plan);
3. a short transaction applies Stripe's answer (``membership_state.apply``).

Stripe unreachable at step 2: a 503, the membership stays ``creating``, and joining the
same plan again repeats the calls with the same keys (Stripe answers what it made).
Without a trial the answer carries the first invoice's ``client_secret`` for Stripe.js;
the membership is ``incomplete`` until that invoice is paid.

Changing plan, cancelling (at period end, or now) and resuming call Stripe first and
apply its answer with the audit event in one transaction; webhooks converge the rest
(``memberships_events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.patients.models import Patient
from clinicbridge.patients.service import audit_reads
from clinicbridge.payments import membership_plans, membership_state, stripe_api, stripe_billing
from clinicbridge.payments.membership_models import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    Membership,
    MembershipPlan,
    StripeCustomer,
)
from clinicbridge.settings import Settings

RESOURCE = membership_state.RESOURCE


class MembershipStateError(ConflictError):
    type_slug = "membership-state"
    title = "Not possible in this membership's state"


@dataclass(frozen=True)
class Joined:
    membership: Membership
    client_secret: str | None  # pay the first invoice with Stripe.js (no trial)


def _actor(ctx: Ctx) -> str:
    return f"{ctx.actor_type}:{ctx.actor_id}"


def get_membership(
    session: Session, ctx: Ctx, membership_id: str, *, lock: bool = False
) -> Membership:
    stmt = scoped_select(Membership, ctx.tenant_id).where(Membership.id == membership_id)
    found = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise NotFoundError("No such membership.")
    return found


def _patient(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    patient = session.scalars(
        scoped_select(Patient, ctx.tenant_id).where(Patient.id == patient_id)
    ).first()
    if patient is None:
        raise NotFoundError("No such patient.")
    return patient


def _joinable(session: Session, ctx: Ctx, plan_id: str) -> MembershipPlan:
    plan = session.scalars(
        scoped_select(MembershipPlan, ctx.tenant_id).where(MembershipPlan.id == plan_id)
    ).first()
    if plan is None:
        raise InvalidInputError.one("plan_id", "no such membership plan", "not_found")
    if not plan.active:
        raise InvalidInputError.one("plan_id", "this plan is no longer offered", "inactive")
    return plan


def _live(session: Session, tenant_id: str, patient_id: str, plan_id: str) -> Membership | None:
    return session.scalars(
        sa.select(Membership).where(
            Membership.tenant_id == tenant_id,
            Membership.patient_id == patient_id,
            Membership.plan_id == plan_id,
            Membership.status.in_(LIVE_STATUSES),
        )
    ).first()


def list_for_patient(
    session: Session,
    ctx: Ctx,
    patient_id: str,
    *,
    limit: int,
    starting_after: str | None,
    purpose: str,
) -> Page[Membership]:
    """The patient's memberships, oldest first; the read is audited (patient data)."""
    patient = _patient(session, ctx, patient_id)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    stmt = scoped_select(Membership, ctx.tenant_id).where(Membership.patient_id == patient.id)
    return paginate(session, stmt, Membership.id, limit, starting_after)


@dataclass(frozen=True)
class Held:
    """A membership as staff see it on the patient's page."""

    membership: Membership
    plan: MembershipPlan
    # The plan's price for the next billing period (in its currency); None when nothing
    # more will be billed: cancelled at period end, or ended. Not the exact next invoice:
    # after a plan change within the period Stripe adds the prorations to it (knowing
    # them would take Stripe's invoice preview, an outside call per page view).
    next_amount: int | None


def held_by(session: Session, ctx: Ctx, patient_id: str) -> list[Held]:
    """This clinic's memberships of the patient with their plans, newest first. Reads no
    patient record itself: the caller has found the patient and audited its read (the
    admin patient page does both in one ``patient.read``)."""
    rows = session.execute(
        sa.select(Membership, MembershipPlan)
        .join(MembershipPlan, MembershipPlan.id == Membership.plan_id)
        .where(
            Membership.tenant_id == ctx.tenant_id,
            MembershipPlan.tenant_id == ctx.tenant_id,
            Membership.patient_id == patient_id,
        )
        .order_by(Membership.id.desc())
    ).all()
    return [
        Held(
            membership,
            plan,
            None
            if membership.status in ENDED_STATUSES or membership.cancel_at_period_end
            else plan.amount,
        )
        for membership, plan in rows
    ]


def open_membership(session: Session, ctx: Ctx, patient_id: str, plan_id: str) -> Membership:
    """Step 1: the ``creating`` membership (or the one a failed join left behind)."""
    patient = _patient(session, ctx, patient_id)
    plan = _joinable(session, ctx, plan_id)
    existing = _live(session, ctx.tenant_id, patient.id, plan.id)
    if existing is not None and existing.status == "creating":
        return existing  # a join Stripe did not answer: step 2 again, same keys
    if existing is not None:
        raise InvalidInputError.one(
            "plan_id", "the patient already has a membership of this plan", "already_member"
        )
    membership_id = new_id("mem")
    membership = Membership(
        id=membership_id,
        tenant_id=ctx.tenant_id,
        patient_id=patient.id,
        plan_id=plan.id,
        integration_id=plan.integration_id,
        status="creating",
        cancel_at_period_end=False,
        state_key=[0, 0, 0, -1],
        idempotency_key=f"cb:{membership_id}:sub:v1",
        created_by=_actor(ctx),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(membership)
    session.flush()
    record(
        session,
        ctx,
        "membership.create",
        RESOURCE,
        membership.id,
        diff={"patient_id": patient.id, "plan_id": plan.id, "status": "creating"},
    )
    return membership


def _account(db: Database, settings: Settings, tenant_id: str) -> stripe_api.Account:
    with db.read() as session:
        integration = membership_plans.require_stripe(session, tenant_id, "plan_id")
        return stripe_api.account(db, settings, integration)


def _customer(
    db: Database, acct: stripe_api.Account, tenant_id: str, patient_id: str, now: datetime
) -> str:
    """The patient's Stripe Customer on this integration, made once."""
    with db.read() as session:
        found = session.scalar(
            sa.select(StripeCustomer.stripe_customer_id).where(
                StripeCustomer.integration_id == acct.integration_id,
                StripeCustomer.patient_id == patient_id,
            )
        )
        patient = session.get(Patient, patient_id)
        assert patient is not None
        name = f"{patient.first_name} {patient.last_name}"
    if found is not None:
        return found
    made = stripe_billing.create_customer(
        acct,
        name=name,
        metadata={"patient_id": patient_id, "tenant_id": tenant_id},
        idempotency_key=f"cb:{acct.integration_id}:{patient_id}:customer:v1",
    )
    try:
        with db.write() as session:
            session.add(
                StripeCustomer(
                    id=new_id("scu"),
                    tenant_id=tenant_id,
                    integration_id=acct.integration_id,
                    patient_id=patient_id,
                    stripe_customer_id=made,
                    created_at=now,
                )
            )
    except IntegrityError:  # a concurrent join stored it first (same key: same customer)
        pass
    return made


def join(db: Database, settings: Settings, ctx: Ctx, membership_id: str) -> Joined:
    """Steps 2 and 3 of joining (no transaction open)."""
    with db.read() as session:
        membership = get_membership(session, ctx, membership_id)
        if membership.status != "creating":
            return Joined(membership, None)
        plan = session.get(MembershipPlan, membership.plan_id)
        assert plan is not None
        patient_id, plan_id, key = membership.patient_id, plan.id, membership.idempotency_key
        trial_days = plan.trial_days
    price = membership_plans.ensure_price(db, settings, ctx.tenant_id, plan_id)
    acct = _account(db, settings, ctx.tenant_id)
    customer = _customer(db, acct, ctx.tenant_id, patient_id, ctx.now)
    sub = stripe_billing.create_subscription(
        acct,
        customer=customer,
        price=price,
        trial_days=trial_days,
        metadata={"membership_id": membership_id, "patient_id": patient_id, "plan_id": plan_id},
        idempotency_key=key,
    )
    with db.write() as session:
        row = get_membership(session, ctx, membership_id, lock=True)
        row.integration_id = acct.integration_id
        if row.status == "creating" or not row.stripe_subscription_id:
            _apply_answer(session, ctx, row, sub)
        session.flush()
        session.expunge(row)
    return Joined(row, sub.client_secret)


def _apply_answer(
    session: Session, ctx: Ctx, membership: Membership, sub: stripe_billing.Subscription
) -> None:
    """Stripe's answer to our call: newer than every event seen (see membership_state)."""
    stored = membership_state.stored_key(membership)
    key = membership_state.key_of(sub, stored[1])
    if stored[0] and not key[0]:
        return  # ended already: Stripe never revives a canceled subscription
    membership_state.apply(session, membership, sub, key, ctx.now, ctx=ctx)


def _changeable(session: Session, ctx: Ctx, membership_id: str) -> Membership:
    membership = get_membership(session, ctx, membership_id)
    if membership.status in ENDED_STATUSES or membership.status == "creating":
        raise MembershipStateError(
            f"A {membership.status} membership cannot be changed.".replace("_", " ")
        )
    if not membership.stripe_subscription_id:
        raise MembershipStateError("This membership has no Stripe subscription yet.")
    return membership


def change_plan(
    db: Database, settings: Settings, ctx: Ctx, membership_id: str, plan_id: str
) -> Membership:
    """Move to another plan; Stripe prorates the rest of the period on the next invoice."""
    with db.read() as session:
        membership = _changeable(session, ctx, membership_id)
        plan = _joinable(session, ctx, plan_id)
        if plan.id == membership.plan_id:
            raise InvalidInputError.one("plan_id", "is the membership's plan already", "same_plan")
        current = session.get(MembershipPlan, membership.plan_id)
        if current is not None and current.currency != plan.currency:
            raise InvalidInputError.one(
                "plan_id", "is priced in another currency than the membership", "currency"
            )
        if _live(session, ctx.tenant_id, membership.patient_id, plan.id) is not None:
            raise InvalidInputError.one(
                "plan_id", "the patient already has a membership of this plan", "already_member"
            )
        sub_id, item_id, old_plan = (
            membership.stripe_subscription_id,
            membership.stripe_item_id,
            membership.plan_id,
        )
    assert sub_id is not None
    price = membership_plans.ensure_price(db, settings, ctx.tenant_id, plan.id)
    acct = _account(db, settings, ctx.tenant_id)
    if item_id is None:
        item_id = stripe_billing.retrieve_subscription(acct, sub_id).item_id or ""
    sub = stripe_billing.change_price(
        acct,
        sub_id,
        item_id=item_id,
        price=price,
        idempotency_key=f"cb:{membership_id}:plan:{new_id('chg')}",
    )
    return _record(
        db, ctx, membership_id, sub, "membership.change_plan", {"plan_id": [old_plan, plan.id]}
    )


def cancel(
    db: Database, settings: Settings, ctx: Ctx, membership_id: str, *, at_period_end: bool
) -> Membership:
    """At period end: the patient keeps the plan until ``current_period_end`` (and can
    resume until then); otherwise Stripe cancels the subscription now."""
    with db.read() as session:
        membership = _changeable(session, ctx, membership_id)
        sub_id = membership.stripe_subscription_id
    assert sub_id is not None
    acct = _account(db, settings, ctx.tenant_id)
    if at_period_end:
        sub = stripe_billing.set_cancel_at_period_end(
            acct, sub_id, True, idempotency_key=f"cb:{membership_id}:cancel:{new_id('chg')}"
        )
    else:
        sub = stripe_billing.cancel_now(acct, sub_id)
    return _record(
        db, ctx, membership_id, sub, "membership.cancel", {"at_period_end": at_period_end}
    )


def resume(db: Database, settings: Settings, ctx: Ctx, membership_id: str) -> Membership:
    """Undo a cancel at period end (before the period ends)."""
    with db.read() as session:
        membership = _changeable(session, ctx, membership_id)
        if not membership.cancel_at_period_end:
            raise MembershipStateError("This membership is not set to cancel.")
        sub_id = membership.stripe_subscription_id
    assert sub_id is not None
    acct = _account(db, settings, ctx.tenant_id)
    sub = stripe_billing.set_cancel_at_period_end(
        acct, sub_id, False, idempotency_key=f"cb:{membership_id}:resume:{new_id('chg')}"
    )
    return _record(
        db, ctx, membership_id, sub, "membership.resume", {"cancel_at_period_end": False}
    )


def _record(
    db: Database,
    ctx: Ctx,
    membership_id: str,
    sub: stripe_billing.Subscription,
    action: str,
    diff: dict[str, object],
) -> Membership:
    with db.write() as session:
        row = get_membership(session, ctx, membership_id, lock=True)
        _apply_answer(session, ctx, row, sub)
        record(session, ctx, action, RESOURCE, row.id, diff=diff)
        session.flush()
        session.expunge(row)
    return row
