"""The demo clinic that ``clinicbridge demo`` and ``make run`` set up.

Every change is audited as done by the system (actor ``cli``), like the other
commands of the ``clinicbridge`` CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record_system
from clinicbridge.core.api_keys import created_key_diff, issue_key
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import ApiKey, Tenant, User
from clinicbridge.core.passwords import generate_password, hash_password
from clinicbridge.core.tenancy import create_tenant, created_tenant_diff
from clinicbridge.db.engine import Database

DEMO_SLUG = "demo-clinic"
DEMO_OWNER = "owner@demo-clinic.example.com"
DEMO_KEY_NAME = "demo"
ACTOR = "cli"


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
            _audit(session, tenant.id, now, "tenant.create", tenant.id, created_tenant_diff(tenant))
        password = generate_password()
        password_hash = hash_password(password)
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
            created = {"email": DEMO_OWNER, "display_name": owner.display_name, "role": "owner"}
            _audit(session, tenant.id, now, "user.create", owner.id, diff_of({}, created))
        else:
            diff = diff_of({"password": owner.password_hash}, {"password": password_hash})
            _audit(session, tenant.id, now, "user.update", owner.id, diff)
        owner.password_hash = password_hash
        owner.updated_at = now
        old_keys = session.scalars(
            sa.select(ApiKey).where(
                ApiKey.tenant_id == tenant.id,
                ApiKey.name == DEMO_KEY_NAME,
                ApiKey.revoked_at.is_(None),
            )
        )
        for old in old_keys:
            old.revoked_at = now
            diff = diff_of({"revoked_at": None}, {"revoked_at": now})
            _audit(session, tenant.id, now, "api_key.revoke", old.id, diff)
        key, raw = issue_key(
            session, tenant_id=tenant.id, name=DEMO_KEY_NAME, role="owner", now=now, created_by=None
        )
        _audit(session, tenant.id, now, "api_key.create", key.id, created_key_diff(key))
        return DemoClinic(tenant.id, raw, DEMO_OWNER, password)


def _audit(
    session: Session,
    tenant_id: str,
    now: datetime,
    action: str,
    resource_id: str,
    diff: dict[str, Any] | None,
) -> None:
    resource_type = action.split(".", 1)[0]
    record_system(
        session, tenant_id, action, resource_type, resource_id, now=now, actor_id=ACTOR, diff=diff
    )
