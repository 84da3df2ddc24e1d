"""``/api/v1/tax-rates``: the clinic's tax rates, grouped by tax code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.payments import taxes
from clinicbridge.payments.schemas import TaxRateCreate, TaxRateOut, TaxRateUpdate

router = APIRouter(tags=["billing"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("billing:read")]
Writer = Annotated[Ctx, require("billing:write")]
RateId = Annotated[str, Path(max_length=64)]


@router.get("/tax-rates", response_model=ListOut[TaxRateOut])
def list_tax_rates(db: DB, ctx: Reader) -> ListOut[TaxRateOut]:
    """Every rate, by tax code then the order they apply in."""
    with db.read() as session:
        return ListOut[TaxRateOut](
            data=[TaxRateOut.model_validate(r) for r in taxes.list_tax_rates(session, ctx)]
        )


@router.post("/tax-rates", status_code=201, response_model=TaxRateOut)
def create_tax_rate(body: TaxRateCreate, db: DB, ctx: Writer) -> TaxRateOut:
    with db.write() as session:
        return TaxRateOut.model_validate(taxes.create_tax_rate(session, ctx, body.model_dump()))


@router.get("/tax-rates/{rate_id}", response_model=TaxRateOut)
def get_tax_rate(rate_id: RateId, db: DB, ctx: Reader) -> TaxRateOut:
    with db.read() as session:
        return TaxRateOut.model_validate(taxes.get_tax_rate(session, ctx, rate_id))


@router.patch("/tax-rates/{rate_id}", response_model=TaxRateOut)
def update_tax_rate(rate_id: RateId, body: TaxRateUpdate, db: DB, ctx: Writer) -> TaxRateOut:
    """Change a rate; invoices already finalized keep their taxes."""
    with db.write() as session:
        changes = body.model_dump(exclude_unset=True)
        return TaxRateOut.model_validate(taxes.update_tax_rate(session, ctx, rate_id, changes))
