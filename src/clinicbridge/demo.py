"""The demo clinic that ``clinicbridge demo`` and ``make run`` set up."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from clinicbridge.core.api_keys import issue_key
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import ApiKey, Tenant, User
from clinicbridge.core.passwords import generate_password, hash_password
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import Database

DEMO_SLUG = "demo-clinic"
DEMO_OWNER = "owner@demo-clinic.example.com"
DEMO_KEY_NAME = "demo"


@dataclass(frozen=True)
class DemoClinic:
    tenant_id: str
    api_key: str
    owner_email: str
    owner_password: str


def ensure_demo(db: Database) -> DemoClinic:
    now = SystemClock().now()
    with db.write() as session:
        tenant = session.scalar(sa.select(Tenant).where(Tenant.slug == DEMO_SLUG))
        if tenant is None:
            tenant = create_tenant(
                session,
                name="Demo Clinic",
                slug=DEMO_SLUG,
                timezone="America/Toronto",
                default_language="en",
                currency="CAD",
                now=now,
            )
        password = generate_password()
        owner = session.scalar(
            sa.select(User).where(User.tenant_id == tenant.id, User.email == DEMO_OWNER)
        )
        if owner is None:
            owner = User(
                id=new_id("usr"),
                tenant_id=tenant.id,
                email=DEMO_OWNER,
                display_name="Demo Owner",
                role="owner",
                is_active=True,
                created_at=now,
            )
            session.add(owner)
        owner.password_hash = hash_password(password)
        owner.updated_at = now
        session.execute(
            sa.update(ApiKey)
            .where(
                ApiKey.tenant_id == tenant.id,
                ApiKey.name == DEMO_KEY_NAME,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        _, raw = issue_key(
            session, tenant_id=tenant.id, name=DEMO_KEY_NAME, role="owner", now=now, created_by=None
        )
        return DemoClinic(tenant.id, raw, DEMO_OWNER, password)
