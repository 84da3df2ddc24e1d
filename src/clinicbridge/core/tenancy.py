"""Clinics (tenants) and the one helper every tenant-scoped lookup goes through."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.validation import (
    check_currency,
    check_language,
    check_slug,
    check_timezone,
    slugify,
)

T = TypeVar("T")


def scoped_select(model: type[T], tenant_id: str) -> sa.Select[T]:
    """``SELECT model WHERE tenant_id = :tenant_id``: the start of every tenant query."""
    return sa.select(model).where(model.tenant_id == tenant_id)  # type: ignore[attr-defined]


def get_scoped(session: Session, model: type[T], tenant_id: str, **where: Any) -> T:
    """One row of this clinic, or NotFoundError; another clinic's row is simply not found."""
    stmt = scoped_select(model, tenant_id).filter_by(**where)
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFoundError(f"No such {getattr(model, '__tablename__', 'resource')[:-1]}.")
    return row


def create_tenant(
    session: Session,
    *,
    name: str,
    now: datetime,
    timezone: str = "UTC",
    default_language: str = "en",
    currency: str = "USD",
    slug: str | None = None,
) -> Tenant:
    base = check_slug(slug) if slug else slugify(name)
    candidate, n = base, 1
    while session.scalar(sa.select(Tenant.id).where(Tenant.slug == candidate)) is not None:
        n += 1
        candidate = f"{base[:58]}-{n}"
    tenant = Tenant(
        id=new_id("ten"),
        slug=candidate,
        name=name,
        timezone=check_timezone(timezone),
        default_language=check_language(default_language),
        currency=check_currency(currency),
        created_at=now,
        updated_at=now,
    )
    session.add(tenant)
    session.flush()
    return tenant


def created_tenant_diff(tenant: Tenant) -> dict[str, Any] | None:
    """What a ``tenant.create`` event shows (the caller records it: creators have no Ctx)."""
    fields = ("name", "slug", "timezone", "default_language", "currency")
    return diff_of({}, {field: getattr(tenant, field) for field in fields})


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError("No such clinic.")
    return tenant


_PROFILE = sa.select(*Tenant.__table__.c).where(Tenant.id == sa.bindparam("tenant_id"))


def tenant_profile(conn: sa.Connection, tenant_id: str) -> dict[str, Any]:
    """The clinic's profile as a mapping: a Core read for the hot ``GET /tenant``."""
    row = conn.execute(_PROFILE, {"tenant_id": tenant_id}).mappings().first()
    if row is None:
        raise NotFoundError("No such clinic.")
    return dict(row)


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(sa.select(Tenant).order_by(Tenant.id)))


def update_tenant(session: Session, ctx: Ctx, changes: dict[str, Any]) -> Tenant:
    """Change the calling clinic's profile; audited as ``tenant.update``."""
    tenant = get_tenant(session, ctx.tenant_id)
    before = {field: getattr(tenant, field) for field in changes}
    for field, value in changes.items():
        setattr(tenant, field, value)
    tenant.updated_at = ctx.now
    session.flush()
    diff = diff_of(before, changes)
    if diff:
        record(session, ctx, "tenant.update", "tenant", tenant.id, diff=diff)
    return tenant
