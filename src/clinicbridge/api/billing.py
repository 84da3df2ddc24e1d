"""A patient's balance and ledger, and the clinic's billing settings.

Balance and ledger reads are patient data: each is audited as a ``patient.read``
with the purpose in ``X-Access-Purpose`` (default ``billing``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.payments import config, ledger
from clinicbridge.payments.schemas import (
    BalanceOut,
    BillingSettingsOut,
    BillingSettingsUpdate,
    LedgerEntryOut,
)

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Owner = Annotated[Ctx, require("tenant:write")]
PatientId = Annotated[str, Path(max_length=64)]
Purpose = Annotated[
    str,
    Header(
        alias="X-Access-Purpose",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$",
    ),
]


@router.get("/patients/{patient_id}/balance", response_model=BalanceOut)
def patient_balance(
    patient_id: PatientId, db: DB, ctx: Reader, purpose: Purpose = "billing"
) -> BalanceOut:
    """The sum of the patient's ledger in the clinic's currency; positive: owes."""
    with db.write() as session:
        amount, currency = ledger.patient_balance(session, ctx, patient_id, purpose=purpose)
        return BalanceOut(balance=amount, currency=currency)


@router.get("/patients/{patient_id}/ledger", response_model=ListOut[LedgerEntryOut])
def patient_ledger(
    patient_id: PatientId, db: DB, ctx: Reader, page: Paging, purpose: Purpose = "billing"
) -> ListOut[LedgerEntryOut]:
    """The patient's ledger entries, oldest first."""
    with db.write() as session:
        found = ledger.list_entries(
            session,
            ctx,
            patient_id,
            limit=page.limit,
            starting_after=page.starting_after,
            purpose=purpose,
        )
        return ListOut.of(found, LedgerEntryOut.model_validate)


@router.get("/billing/settings", response_model=BillingSettingsOut)
def get_billing_settings(db: DB, ctx: Reader) -> BillingSettingsOut:
    with db.read() as session:
        return BillingSettingsOut.model_validate(config.billing_settings(session, ctx.tenant_id))


@router.patch("/billing/settings", response_model=BillingSettingsOut)
def update_billing_settings(body: BillingSettingsUpdate, db: DB, ctx: Owner) -> BillingSettingsOut:
    """Owners only (``tenant:write``): the refund approval threshold guards refunds."""
    with db.write() as session:
        changes = body.model_dump(exclude_unset=True)
        return BillingSettingsOut.model_validate(
            config.update_billing_settings(session, ctx, changes)
        )
