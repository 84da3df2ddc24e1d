"""``/api/v1/users``: a clinic's staff accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core import users
from clinicbridge.core.context import Ctx
from clinicbridge.core.schemas import UserCreate, UserCreated, UserOut, UserUpdate

router = APIRouter(prefix="/users", tags=["users"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("users:read")]
Writer = Annotated[Ctx, require("users:write")]


@router.get("", response_model=ListOut[UserOut])
def list_users(db: DB, ctx: Reader, page: Paging) -> ListOut[UserOut]:
    with db.read() as session:
        result = users.list_users(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, UserOut.model_validate)


@router.post("", status_code=201, response_model=UserCreated)
def create_user(body: UserCreate, db: DB, ctx: Writer) -> UserCreated:
    with db.write() as session:
        user, generated = users.create_user(session, ctx, body)
        out = UserOut.model_validate(user).model_dump()
    return UserCreated(**out, initial_password=generated)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: str, db: DB, ctx: Reader) -> UserOut:
    with db.read() as session:
        return UserOut.model_validate(users.get_user(session, ctx, user_id))


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: str, body: UserUpdate, db: DB, ctx: Writer) -> UserOut:
    with db.write() as session:
        return UserOut.model_validate(users.update_user(session, ctx, user_id, body))


@router.delete("/{user_id}", status_code=204)
def delete_user(user_id: str, db: DB, ctx: Writer) -> Response:
    with db.write() as session:
        users.delete_user(session, ctx, user_id)
    return Response(status_code=204)
