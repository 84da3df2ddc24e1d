"""Roles: built-in sets from ``rbac`` plus each clinic's custom roles."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, InvalidInputError, PermissionDeniedError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import ApiKey, Role, User
from clinicbridge.core.rbac import BUILTIN_DESCRIPTIONS, BUILTIN_ROLES, unknown_permissions
from clinicbridge.core.schemas import RoleCreate, RoleOut, RoleUpdate
from clinicbridge.core.tenancy import get_scoped, scoped_select


def role_permissions(
    session: Session | sa.Connection, tenant_id: str, role: str
) -> frozenset[str] | None:
    """The permissions of a role name in this clinic, or None if it does not exist."""
    builtin = BUILTIN_ROLES.get(role)
    if builtin is not None:
        return builtin
    perms = session.scalar(
        sa.select(Role.permissions).where(Role.tenant_id == tenant_id, Role.name == role)
    )
    return None if perms is None else frozenset(perms)


def require_role(
    session: Session, tenant_id: str, role: str, field: str = "role"
) -> frozenset[str]:
    perms = role_permissions(session, tenant_id, role)
    if perms is None:
        raise InvalidInputError.one(field, f"unknown role '{role}'", "unknown_role")
    return perms


def _builtin_out(name: str) -> RoleOut:
    return RoleOut(
        name=name,
        description=BUILTIN_DESCRIPTIONS[name],
        permissions=sorted(BUILTIN_ROLES[name]),
        builtin=True,
    )


def _custom_out(role: Role) -> RoleOut:
    return RoleOut(
        name=role.name,
        description=role.description,
        permissions=sorted(role.permissions),
        builtin=False,
    )


def list_roles(session: Session, ctx: Ctx) -> list[RoleOut]:
    custom = session.scalars(scoped_select(Role, ctx.tenant_id).order_by(Role.name))
    return [_builtin_out(n) for n in BUILTIN_ROLES] + [_custom_out(r) for r in custom]


def get_role(session: Session, ctx: Ctx, name: str) -> RoleOut:
    if name in BUILTIN_ROLES:
        return _builtin_out(name)
    return _custom_out(get_scoped(session, Role, ctx.tenant_id, name=name))


def _checked_permissions(ctx: Ctx, permissions: list[str]) -> list[str]:
    """Known permissions only, and none the acting principal lacks (no escalation)."""
    unknown = unknown_permissions(permissions)
    if unknown:
        raise InvalidInputError.one(
            "permissions", f"unknown permission(s): {', '.join(unknown)}", "unknown_permission"
        )
    missing = sorted(set(permissions) - ctx.permissions)
    if missing:
        raise PermissionDeniedError(
            missing[0], f"You cannot put '{missing[0]}' in a role: you do not hold it."
        )
    return sorted(set(permissions))


def create_role(session: Session, ctx: Ctx, data: RoleCreate) -> RoleOut:
    if data.name in BUILTIN_ROLES:
        raise ConflictError(f"'{data.name}' is a built-in role.")
    if role_permissions(session, ctx.tenant_id, data.name) is not None:
        raise ConflictError(f"Role '{data.name}' already exists.")
    role = Role(
        id=new_id("rol"),
        tenant_id=ctx.tenant_id,
        name=data.name,
        description=data.description,
        permissions=_checked_permissions(ctx, data.permissions),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(role)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request created it first
        raise ConflictError(f"Role '{data.name}' already exists.") from exc
    record(session, ctx, "role.create", "role", role.id, diff=diff_of({}, _audited(role)))
    return _custom_out(role)


def _audited(role: Role) -> dict[str, object]:
    return {"name": role.name, "description": role.description, "permissions": role.permissions}


def _custom(session: Session, ctx: Ctx, name: str) -> Role:
    if name in BUILTIN_ROLES:
        raise ConflictError(f"'{name}' is a built-in role and cannot be changed.")
    return get_scoped(session, Role, ctx.tenant_id, name=name)


def update_role(session: Session, ctx: Ctx, name: str, data: RoleUpdate) -> RoleOut:
    role = _custom(session, ctx, name)
    before = _audited(role)
    if data.description is not None:
        role.description = data.description
    if data.permissions is not None:
        role.permissions = _checked_permissions(ctx, data.permissions)
    role.updated_at = ctx.now
    session.flush()
    diff = diff_of(before, _audited(role))
    if diff:
        record(session, ctx, "role.update", "role", role.id, diff=diff)
    return _custom_out(role)


def delete_role(session: Session, ctx: Ctx, name: str) -> None:
    role = _custom(session, ctx, name)
    holders = session.scalar(
        sa.select(sa.func.count()).select_from(
            sa.union_all(
                sa.select(User.id).where(User.tenant_id == ctx.tenant_id, User.role == name),
                sa.select(ApiKey.id).where(
                    ApiKey.tenant_id == ctx.tenant_id,
                    ApiKey.role == name,
                    ApiKey.revoked_at.is_(None),
                ),
            ).subquery()
        )
    )
    if holders:
        raise ConflictError(f"Role '{name}' is still held by {holders} user(s) or API key(s).")
    diff = diff_of(_audited(role), {})
    session.delete(role)
    session.flush()
    record(session, ctx, "role.delete", "role", role.id, diff=diff)


def assert_can_grant(session: Session, ctx: Ctx, role: str, field: str = "role") -> None:
    """Refuse to hand out a role with permissions the acting principal lacks."""
    perms = require_role(session, ctx.tenant_id, role, field)
    missing = sorted(perms - ctx.permissions)
    if missing:
        raise PermissionDeniedError(
            missing[0], f"You cannot grant role '{role}': it holds '{missing[0]}', which you lack."
        )
