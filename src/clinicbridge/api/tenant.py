"""``/api/v1/tenant``: the calling clinic's profile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.core import tenancy
from clinicbridge.core.context import Ctx
from clinicbridge.core.schemas import TenantOut, TenantUpdate

router = APIRouter(prefix="/tenant", tags=["tenant"], route_class=IdempotentRoute)


@router.get("", response_model=TenantOut)
async def get_tenant(db: DB, ctx: Annotated[Ctx, require("tenant:read")]) -> TenantOut:
    profile = await db.run_read_core(lambda conn: tenancy.tenant_profile(conn, ctx.tenant_id))
    return TenantOut.model_validate(profile)


@router.patch("", response_model=TenantOut)
def update_tenant(
    body: TenantUpdate, db: DB, ctx: Annotated[Ctx, require("tenant:write")]
) -> TenantOut:
    with db.write() as session:
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        tenant = tenancy.update_tenant(session, ctx, changes)
        return TenantOut.model_validate(tenant)
