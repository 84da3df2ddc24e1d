"""Provider payouts (Stripe Connect): ``/providers/{id}/payout-account``,
``/services/{id}/payout-rule`` and ``/transfers``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.pagination import paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.payments import connect
from clinicbridge.payments.connect_models import Transfer
from clinicbridge.payments.connect_schemas import (
    OnboardingOut,
    PayoutAccountOut,
    PayoutRuleIn,
    PayoutRuleOut,
    TransferOut,
)

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Writer = Annotated[Ctx, require("billing:write")]
ProviderId = Annotated[str, Path(max_length=64)]
ServiceId = Annotated[str, Path(max_length=64)]
ACCOUNT = "/providers/{provider_id}/payout-account"


@router.post(ACCOUNT, status_code=201, response_model=OnboardingOut)
async def start_onboarding(
    provider_id: ProviderId, request: Request, db: DB, ctx: Writer
) -> OnboardingOut:
    """The provider's Express account (created on the first call) and a fresh
    onboarding link to send them."""
    made = await anyio.to_thread.run_sync(
        connect.start_onboarding, db, request.app.state.settings, ctx, provider_id
    )
    expires = datetime.fromtimestamp(made.expires_at, UTC) if made.expires_at else None
    return OnboardingOut(
        **PayoutAccountOut.of(made.account).model_dump(),
        onboarding_url=made.url,
        onboarding_expires_at=expires,
    )


@router.get(ACCOUNT, response_model=PayoutAccountOut)
async def get_payout_account(
    provider_id: ProviderId, request: Request, db: DB, ctx: Reader
) -> PayoutAccountOut:
    """Status as last reported by Stripe, with the account's balance asked now (the
    last snapshot when Stripe cannot be reached)."""
    with db.read() as session:
        connect.require_account(session, ctx, provider_id)
    row = await anyio.to_thread.run_sync(
        lambda: connect.refresh(db, request.app.state.settings, ctx, provider_id, account=False)
    )
    return PayoutAccountOut.of(row)


@router.post(ACCOUNT + "/refresh", response_model=PayoutAccountOut)
async def refresh_payout_account(
    provider_id: ProviderId, request: Request, db: DB, ctx: Writer
) -> PayoutAccountOut:
    """Ask Stripe for the account and its balance now (as ``account.updated`` would)."""
    row = await anyio.to_thread.run_sync(
        connect.refresh, db, request.app.state.settings, ctx, provider_id
    )
    return PayoutAccountOut.of(row)


@router.get("/services/{service_id}/payout-rule", response_model=PayoutRuleOut)
def get_payout_rule(service_id: ServiceId, db: DB, ctx: Reader) -> PayoutRuleOut:
    with db.read() as session:
        rule = connect.payout_rule(session, ctx, service_id)
        if rule is None:
            raise NotFoundError("This service has no payout rule.")
        return PayoutRuleOut.model_validate(rule)


@router.put("/services/{service_id}/payout-rule", response_model=PayoutRuleOut)
def put_payout_rule(
    service_id: ServiceId, body: PayoutRuleIn, db: DB, ctx: Writer
) -> PayoutRuleOut:
    """How this service's payments are split: ``provider_share_bps`` or the clinic's
    fixed ``application_fee_amount`` (exactly one)."""
    with db.write() as session:
        rule = connect.set_payout_rule(
            session,
            ctx,
            service_id,
            provider_share_bps=body.provider_share_bps,
            application_fee_amount=body.application_fee_amount,
        )
        return PayoutRuleOut.model_validate(rule)


@router.get("/transfers", response_model=ListOut[TransferOut])
def list_transfers(
    db: DB,
    ctx: Reader,
    page: Paging,
    booking_id: Annotated[str | None, Query(max_length=64)] = None,
    provider_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> ListOut[TransferOut]:
    """Transfers to providers' connected accounts, oldest first."""
    with db.read() as session:
        stmt = scoped_select(Transfer, ctx.tenant_id)
        for column, value in (
            (Transfer.booking_id, booking_id),
            (Transfer.provider_id, provider_id),
            (Transfer.status, status),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        found = paginate(session, stmt, Transfer.id, page.limit, page.starting_after)
        return ListOut.of(found, TransferOut.model_validate)
