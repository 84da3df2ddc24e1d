"""``/api/v1/membership-plans`` and patient memberships (Stripe subscriptions): join,
change plan (prorated), cancel at period end or now, resume.

The patient's memberships are patient data: listing them is audited as a
``patient.read`` with the purpose in ``X-Access-Purpose`` (default ``billing``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.payments import membership_plans, memberships
from clinicbridge.payments.membership_schemas import (
    CancelMembership,
    ChangePlan,
    MembershipCreate,
    MembershipOut,
    PlanCreate,
    PlanOut,
    PlanUpdate,
)
from clinicbridge.settings import Settings

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Writer = Annotated[Ctx, require("billing:write")]
AnId = Annotated[str, Path(max_length=64)]
Purpose = Annotated[
    str,
    Header(
        alias="X-Access-Purpose",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$",
    ),
]
ONE = "/memberships/{membership_id}"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/membership-plans", status_code=201, response_model=PlanOut)
def create_plan(body: PlanCreate, request: Request, db: DB, ctx: Writer) -> PlanOut:
    """A plan billed every month or year (a Stripe Product and recurring Price)."""
    with db.write() as session:
        plan = membership_plans.new_plan(
            session,
            ctx,
            name=body.name,
            amount=body.amount,
            interval=body.interval,
            currency=body.currency,
            trial_days=body.trial_days,
            description=body.description,
        )
        plan_id = plan.id
    membership_plans.ensure_price(db, _settings(request), ctx.tenant_id, plan_id)
    with db.read() as session:
        return PlanOut.model_validate(membership_plans.get_plan(session, ctx, plan_id))


@router.get("/membership-plans", response_model=ListOut[PlanOut])
def list_plans(
    db: DB, ctx: Reader, page: Paging, active: Annotated[bool | None, Query()] = None
) -> ListOut[PlanOut]:
    with db.read() as session:
        found = membership_plans.list_plans(
            session, ctx, limit=page.limit, starting_after=page.starting_after, active=active
        )
        return ListOut.of(found, PlanOut.model_validate)


@router.get("/membership-plans/{plan_id}", response_model=PlanOut)
def get_plan(plan_id: AnId, db: DB, ctx: Reader) -> PlanOut:
    with db.read() as session:
        return PlanOut.model_validate(membership_plans.get_plan(session, ctx, plan_id))


@router.patch("/membership-plans/{plan_id}", response_model=PlanOut)
def update_plan(plan_id: AnId, body: PlanUpdate, db: DB, ctx: Writer) -> PlanOut:
    """Deactivate a plan (members keep it; nobody new can join) or offer it again."""
    with db.write() as session:
        return PlanOut.model_validate(
            membership_plans.set_active(session, ctx, plan_id, body.active)
        )


@router.post("/patients/{patient_id}/memberships", status_code=201, response_model=MembershipOut)
def join(
    patient_id: AnId, body: MembershipCreate, request: Request, db: DB, ctx: Writer
) -> MembershipOut:
    """The patient joins a plan: a Stripe subscription (a trial first if the plan has
    one; else ``client_secret`` pays the first invoice)."""
    with db.write() as session:
        membership_id = memberships.open_membership(session, ctx, patient_id, body.plan_id).id
    joined = memberships.join(db, _settings(request), ctx, membership_id)
    out = MembershipOut.model_validate(joined.membership)
    out.client_secret = joined.client_secret
    return out


@router.get("/patients/{patient_id}/memberships", response_model=ListOut[MembershipOut])
def list_memberships(
    patient_id: AnId, db: DB, ctx: Reader, page: Paging, purpose: Purpose = "billing"
) -> ListOut[MembershipOut]:
    with db.write() as session:
        found = memberships.list_for_patient(
            session,
            ctx,
            patient_id,
            limit=page.limit,
            starting_after=page.starting_after,
            purpose=purpose,
        )
        return ListOut.of(found, MembershipOut.model_validate)


@router.get(ONE, response_model=MembershipOut)
def get_membership(membership_id: AnId, db: DB, ctx: Reader) -> MembershipOut:
    with db.read() as session:
        return MembershipOut.model_validate(memberships.get_membership(session, ctx, membership_id))


@router.post(ONE + "/change-plan", response_model=MembershipOut)
def change_plan(
    membership_id: AnId, body: ChangePlan, request: Request, db: DB, ctx: Writer
) -> MembershipOut:
    """Another plan from now on; Stripe prorates the rest of the period (next invoice)."""
    found = memberships.change_plan(db, _settings(request), ctx, membership_id, body.plan_id)
    return MembershipOut.model_validate(found)


@router.post(ONE + "/cancel", response_model=MembershipOut)
def cancel(
    membership_id: AnId, body: CancelMembership, request: Request, db: DB, ctx: Writer
) -> MembershipOut:
    found = memberships.cancel(
        db, _settings(request), ctx, membership_id, at_period_end=body.at_period_end
    )
    return MembershipOut.model_validate(found)


@router.post(ONE + "/resume", response_model=MembershipOut)
def resume(membership_id: AnId, request: Request, db: DB, ctx: Writer) -> MembershipOut:
    found = memberships.resume(db, _settings(request), ctx, membership_id)
    return MembershipOut.model_validate(found)
