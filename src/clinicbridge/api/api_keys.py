"""``/api/v1/api-keys``: machine credentials; the secret is shown once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core import api_keys
from clinicbridge.core.context import Ctx
from clinicbridge.core.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ApiKeyUpdate

router = APIRouter(prefix="/api-keys", tags=["api-keys"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("api_keys:read")]
Writer = Annotated[Ctx, require("api_keys:write")]


@router.get("", response_model=ListOut[ApiKeyOut])
def list_keys(db: DB, ctx: Reader, page: Paging) -> ListOut[ApiKeyOut]:
    with db.read() as session:
        result = api_keys.list_keys(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, ApiKeyOut.model_validate)


@router.post("", status_code=201, response_model=ApiKeyCreated)
def create_key(body: ApiKeyCreate, db: DB, ctx: Writer) -> ApiKeyCreated:
    with db.write() as session:
        key, raw = api_keys.create_key(session, ctx, body)
        out = ApiKeyOut.model_validate(key).model_dump()
    return ApiKeyCreated(**out, key=raw)


@router.get("/{key_id}", response_model=ApiKeyOut)
def get_key(key_id: str, db: DB, ctx: Reader) -> ApiKeyOut:
    with db.read() as session:
        return ApiKeyOut.model_validate(api_keys.get_key(session, ctx, key_id))


@router.patch("/{key_id}", response_model=ApiKeyOut)
def rename_key(key_id: str, body: ApiKeyUpdate, db: DB, ctx: Writer) -> ApiKeyOut:
    with db.write() as session:
        return ApiKeyOut.model_validate(api_keys.rename_key(session, ctx, key_id, body.name))


@router.delete("/{key_id}", response_model=ApiKeyOut)
def revoke_key(key_id: str, db: DB, ctx: Writer) -> ApiKeyOut:
    """Revoke the key at once; it stays listed with its revocation time."""
    with db.write() as session:
        return ApiKeyOut.model_validate(api_keys.revoke_key(session, ctx, key_id))
