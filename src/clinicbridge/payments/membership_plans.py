"""A clinic's membership plans: a name, an amount per month or year in the currency of
the clinic's Stripe account, an optional free trial; at Stripe a Product and a
recurring Price.

Creating a plan commits the row first (audited ``membership_plan.create``), then makes
the Product and Price with keys derived from the plan id and records their ids. If
Stripe cannot be reached the plan is kept without a price and the error is a 503;
``ensure_price`` (called again by the next subscription to the plan) finishes it with
the same keys, so nothing is made twice. Plans are deactivated, never deleted: members
keep theirs, new patients cannot join it.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import FieldError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.payments import stripe_api, stripe_billing
from clinicbridge.payments.membership_models import INTERVALS, MembershipPlan
from clinicbridge.settings import Settings

RESOURCE = "membership_plan"
MAX_TRIAL_DAYS = 730  # Stripe's limit


def _actor(ctx: Ctx) -> str:
    return f"{ctx.actor_type}:{ctx.actor_id}"


def stripe_currency(integration: Integration) -> str:
    return str(integration.settings.get("currency", "usd")).lower()


def require_stripe(session: Session, tenant_id: str, field: str) -> Integration:
    integration = stripe_api.stripe_integration(session, tenant_id)
    if integration is None:
        raise InvalidInputError.one(
            field, "the clinic has no enabled Stripe integration", "no_provider"
        )
    return integration


def get_plan(session: Session, ctx: Ctx, plan_id: str, *, lock: bool = False) -> MembershipPlan:
    stmt = scoped_select(MembershipPlan, ctx.tenant_id).where(MembershipPlan.id == plan_id)
    found = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise NotFoundError("No such membership plan.")
    return found


def list_plans(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None, active: bool | None
) -> Page[MembershipPlan]:
    stmt = scoped_select(MembershipPlan, ctx.tenant_id)
    if active is not None:
        stmt = stmt.where(MembershipPlan.active.is_(active))
    return paginate(session, stmt, MembershipPlan.id, limit, starting_after)


def new_plan(
    session: Session,
    ctx: Ctx,
    *,
    name: str,
    amount: int,
    interval: str,
    currency: str | None = None,
    trial_days: int = 0,
    description: str | None = None,
) -> MembershipPlan:
    """Step 1: the checked plan row (no Stripe ids yet), audited."""
    errors: list[FieldError] = []
    name = name.strip()
    if not name:
        errors.append(FieldError("name", "is required", "missing"))
    if amount <= 0:
        errors.append(FieldError("amount", "must be more than 0", "not_positive"))
    if interval not in INTERVALS:
        errors.append(FieldError("interval", f"must be one of {', '.join(INTERVALS)}", "invalid"))
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        errors.append(
            FieldError("trial_days", f"must be between 0 and {MAX_TRIAL_DAYS}", "out_of_range")
        )
    integration = require_stripe(session, ctx.tenant_id, "currency")
    wanted = stripe_currency(integration)
    if currency is not None and currency.lower() != wanted:
        errors.append(
            FieldError("currency", "is not the currency of the clinic's Stripe account", "mismatch")
        )
    if errors:
        raise InvalidInputError(errors)
    plan = MembershipPlan(
        id=new_id("mpl"),
        tenant_id=ctx.tenant_id,
        integration_id=integration.id,
        name=name[:120],
        description=(description or "").strip()[:500] or None,
        amount=amount,
        currency=wanted,
        interval=interval,
        trial_days=trial_days,
        active=True,
        created_by=_actor(ctx),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(plan)
    session.flush()
    record(
        session,
        ctx,
        "membership_plan.create",
        RESOURCE,
        plan.id,
        diff={
            "name": plan.name,
            "amount": amount,
            "currency": plan.currency,
            "interval": interval,
            "trial_days": trial_days,
        },
    )
    return plan


def ensure_price(db: Database, settings: Settings, tenant_id: str, plan_id: str) -> str:
    """Steps 2 and 3: the plan's Stripe Product and Price (made once; a retry reuses the
    keys), with no transaction open during the calls. Returns the price id."""
    with db.read() as session:
        plan = session.get(MembershipPlan, plan_id)
        if plan is None or plan.tenant_id != tenant_id:
            raise NotFoundError("No such membership plan.")
        if plan.stripe_price_id:
            return plan.stripe_price_id
        integration = require_stripe(session, tenant_id, "plan_id")
        acct = stripe_api.account(db, settings, integration)
        name, amount, currency, interval = plan.name, plan.amount, plan.currency, plan.interval
    metadata = {"plan_id": plan_id, "tenant_id": tenant_id}
    product = stripe_billing.create_product(
        acct, name=name, metadata=metadata, idempotency_key=f"cb:{plan_id}:product:v1"
    )
    price = stripe_billing.create_price(
        acct,
        product=product,
        amount=amount,
        currency=currency,
        interval=interval,
        metadata=metadata,
        idempotency_key=f"cb:{plan_id}:price:v1",
    )
    with db.write() as session:
        row = session.get(MembershipPlan, plan_id, with_for_update=True)
        assert row is not None
        row.stripe_product_id, row.stripe_price_id = product, price
        row.integration_id = acct.integration_id
    return price


def set_active(session: Session, ctx: Ctx, plan_id: str, active: bool) -> MembershipPlan:
    """Deactivate (or reactivate) a plan; current members keep it. Audited."""
    plan = get_plan(session, ctx, plan_id, lock=True)
    if plan.active != active:
        plan.active, plan.updated_at = active, ctx.now
        session.flush()
        record(
            session,
            ctx,
            "membership_plan.update",
            RESOURCE,
            plan.id,
            diff={"active": [not active, active]},
        )
    return plan
