"""``/api/v1/roles``: built-in roles (read-only) and the clinic's custom roles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core import roles
from clinicbridge.core.context import Ctx
from clinicbridge.core.schemas import RoleCreate, RoleOut, RoleUpdate

router = APIRouter(prefix="/roles", tags=["roles"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("roles:read")]
Writer = Annotated[Ctx, require("roles:write")]


@router.get("", response_model=ListOut[RoleOut])
def list_roles(db: DB, ctx: Reader) -> ListOut[RoleOut]:
    with db.read() as session:
        return ListOut(data=roles.list_roles(session, ctx))


@router.post("", status_code=201, response_model=RoleOut)
def create_role(body: RoleCreate, db: DB, ctx: Writer) -> RoleOut:
    with db.write() as session:
        return roles.create_role(session, ctx, body)


@router.get("/{name}", response_model=RoleOut)
def get_role(name: str, db: DB, ctx: Reader) -> RoleOut:
    with db.read() as session:
        return roles.get_role(session, ctx, name)


@router.patch("/{name}", response_model=RoleOut)
def update_role(name: str, body: RoleUpdate, db: DB, ctx: Writer) -> RoleOut:
    with db.write() as session:
        return roles.update_role(session, ctx, name, body)


@router.delete("/{name}", status_code=204)
def delete_role(name: str, db: DB, ctx: Writer) -> Response:
    with db.write() as session:
        roles.delete_role(session, ctx, name)
    return Response(status_code=204)
