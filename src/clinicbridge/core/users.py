"""Staff users of a clinic: the people who sign in to the admin UI."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import AdminSession, User
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.passwords import generate_password, hash_password
from clinicbridge.core.roles import assert_can_grant
from clinicbridge.core.schemas import UserCreate, UserUpdate
from clinicbridge.core.tenancy import get_scoped, scoped_select


def create_user(session: Session, ctx: Ctx, data: UserCreate) -> tuple[User, str | None]:
    """Create a user; returns the user and a generated password if none was given."""
    assert_can_grant(session, ctx, data.role)
    email = data.email.lower()
    if session.scalar(
        sa.select(User.id).where(User.tenant_id == ctx.tenant_id, User.email == email)
    ):
        raise ConflictError("A user with this e-mail already exists in this clinic.")
    generated = None if data.password else generate_password()
    user = User(
        id=new_id("usr"),
        tenant_id=ctx.tenant_id,
        email=email,
        display_name=data.display_name,
        password_hash=hash_password(data.password or generated or ""),
        role=data.role,
        is_active=True,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request won the race
        raise ConflictError("A user with this e-mail already exists in this clinic.") from exc
    record(session, ctx, "user.create", "user", user.id, diff=diff_of({}, _audited(user)))
    return user, generated


def list_users(session: Session, ctx: Ctx, *, limit: int, starting_after: str | None) -> Page[User]:
    return paginate(session, scoped_select(User, ctx.tenant_id), User.id, limit, starting_after)


def get_user(session: Session, ctx: Ctx, user_id: str) -> User:
    return get_scoped(session, User, ctx.tenant_id, id=user_id)


def _active_owners(session: Session, tenant_id: str) -> int:
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(User)
            .where(User.tenant_id == tenant_id, User.role == "owner", User.is_active.is_(True))
        )
        or 0
    )


def _guard_last_owner(session: Session, user: User) -> None:
    if user.role == "owner" and user.is_active and _active_owners(session, user.tenant_id) <= 1:
        raise ConflictError("This is the clinic's last active owner; appoint another owner first.")


def _audited(user: User, *, password: bool = False) -> dict[str, Any]:
    """The fields a user's audit diff shows; the password hash only to mask a change."""
    fields = {
        "email": user.email,
        "display_name": user.display_name,
        "role": user.role,
        "is_active": user.is_active,
    }
    return fields | {"password": user.password_hash} if password else fields


def update_user(session: Session, ctx: Ctx, user_id: str, data: UserUpdate) -> User:
    user = get_user(session, ctx, user_id)
    assert_can_grant(session, ctx, user.role)
    before = _audited(user, password=True)
    demotes = (data.role is not None and data.role != user.role) or data.is_active is False
    if demotes:
        _guard_last_owner(session, user)
    if data.role is not None:
        assert_can_grant(session, ctx, data.role)
        user.role = data.role
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.is_active is not None:
        user.is_active = data.is_active
    if data.password is not None:
        user.password_hash = hash_password(data.password)
    if demotes or data.password is not None:
        _end_sessions(session, user.id)
    user.updated_at = ctx.now
    session.flush()
    diff = diff_of(before, _audited(user, password=True))
    if diff:
        record(session, ctx, "user.update", "user", user.id, diff=diff)
    return user


def delete_user(session: Session, ctx: Ctx, user_id: str) -> None:
    user = get_user(session, ctx, user_id)
    assert_can_grant(session, ctx, user.role)
    _guard_last_owner(session, user)
    _end_sessions(session, user.id)
    diff = diff_of(_audited(user), {})
    session.delete(user)
    session.flush()
    record(session, ctx, "user.delete", "user", user_id, diff=diff)


def _end_sessions(session: Session, user_id: str) -> None:
    session.execute(sa.delete(AdminSession).where(AdminSession.user_id == user_id))
