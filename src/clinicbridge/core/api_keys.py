"""API keys: ``cb_live_`` + 256 random bits, shown once, stored as SHA-256.

A slow password hash buys nothing for a 256-bit random secret, and a fast,
indexed lookup keeps authenticated requests cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import AuthenticationError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import ApiKey
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.roles import assert_can_grant, role_permissions
from clinicbridge.core.schemas import ApiKeyCreate
from clinicbridge.core.tenancy import get_scoped, scoped_select

KEY_PREFIX = "cb_live_"
# Recording every use would turn each read into a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)


# Built once: this runs on every authenticated request.
_BY_HASH = sa.select(
    ApiKey.id, ApiKey.tenant_id, ApiKey.role, ApiKey.last_used_at, ApiKey.revoked_at
).where(ApiKey.key_hash == sa.bindparam("key_hash"))


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_key(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    role: str,
    now: datetime,
    created_by: str | None,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its secret (the only time it exists in clear)."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        role=role,
        key_hash=hash_key(raw),
        key_hint=f"{KEY_PREFIX}…{raw[-4:]}",
        created_by=created_by,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key, raw


def create_key(session: Session, ctx: Ctx, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    assert_can_grant(session, ctx, data.role)
    key, raw = issue_key(
        session,
        tenant_id=ctx.tenant_id,
        name=data.name,
        role=data.role,
        now=ctx.now,
        created_by=ctx.actor_id,
    )
    record(session, ctx, "api_key.create", "api_key", key.id, diff=created_key_diff(key))
    return key, raw


def created_key_diff(key: ApiKey) -> dict[str, object] | None:
    """What an ``api_key.create`` event shows: never the key, not even its hint."""
    return diff_of({}, {"name": key.name, "role": key.role})


def list_keys(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[ApiKey]:
    return paginate(session, scoped_select(ApiKey, ctx.tenant_id), ApiKey.id, limit, starting_after)


def get_key(session: Session, ctx: Ctx, key_id: str) -> ApiKey:
    return get_scoped(session, ApiKey, ctx.tenant_id, id=key_id)


def rename_key(session: Session, ctx: Ctx, key_id: str, name: str) -> ApiKey:
    key = get_key(session, ctx, key_id)
    diff = diff_of({"name": key.name}, {"name": name})
    key.name = name
    session.flush()
    if diff:
        record(session, ctx, "api_key.rename", "api_key", key.id, diff=diff)
    return key


def revoke_key(session: Session, ctx: Ctx, key_id: str) -> ApiKey:
    """Revoke at once; revoking twice keeps the first revocation time."""
    key = get_key(session, ctx, key_id)
    assert_can_grant(session, ctx, key.role)
    if key.revoked_at is None:
        key.revoked_at = ctx.now
        session.flush()
        diff = diff_of({"revoked_at": None}, {"revoked_at": ctx.now})
        record(session, ctx, "api_key.revoke", "api_key", key.id, diff=diff)
    return key


def authenticate_key(
    conn: sa.Connection, raw: str, now: datetime, request_id: str | None, ip: str | None = None
) -> tuple[Ctx, bool]:
    """Resolve a presented key to a Ctx; the flag says last-used time should be recorded.

    Unknown, revoked and malformed keys all raise the same AuthenticationError.
    Runs on every API request, hence a Core connection rather than an ORM session.
    """
    if not raw.startswith(KEY_PREFIX) or len(raw) > 128:
        raise AuthenticationError()
    row = conn.execute(_BY_HASH, {"key_hash": hash_key(raw)}).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError()
    permissions = role_permissions(conn, row.tenant_id, row.role)
    if permissions is None:  # its custom role was deleted: the key holds nothing
        permissions = frozenset()
    ctx = Ctx(
        tenant_id=row.tenant_id,
        actor_type="api_key",
        actor_id=row.id,
        role=row.role,
        permissions=permissions,
        now=now,
        request_id=request_id,
        ip=ip,
    )
    stale = row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION
    return ctx, stale


def touch_key(session: Session, key_id: str, now: datetime) -> None:
    session.execute(
        sa.update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(sa.or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now))
        .values(last_used_at=now)
    )
