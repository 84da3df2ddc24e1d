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
from clinicbridge.scheduling.models import (
    Location,
    Provider,
    Service,
    ServiceProvider,
    WorkingHours,
)

DEMO_SLUG = "demo-clinic"
DEMO_OWNER = "owner@demo-clinic.example.com"
DEMO_KEY_NAME = "demo"
DEMO_TIMEZONE = "America/Toronto"
DEMO_PROVIDERS = ("Dr. Alex Martin", "Dr. Sam Roy")
DEMO_SERVICES = (
    ("General consultation", 30, "in_person"),
    ("Video follow-up", 45, "video"),
)
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
                timezone=DEMO_TIMEZONE,
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
        _ensure_schedule(session, tenant.id, now)
        return DemoClinic(tenant.id, raw, DEMO_OWNER, password)


def _ensure_schedule(session: Session, tenant_id: str, now: datetime) -> None:
    """One location, two providers working Monday-Friday 09:00-17:00 and two services
    (30-minute in-person, 45-minute video), created once."""
    existing = session.scalar(sa.select(Location.id).where(Location.tenant_id == tenant_id))
    if existing is not None:
        return
    location = Location(
        id=new_id("loc"),
        tenant_id=tenant_id,
        name="Main Street",
        timezone=DEMO_TIMEZONE,
        address={"line1": "100 Main Street", "city": "Toronto", "country": "CA"},
        is_active=True,
        created_at=now,
        updated_at=now,
    )
    session.add(location)
    session.flush()
    _audit(
        session,
        tenant_id,
        now,
        "location.create",
        location.id,
        diff_of({}, {"name": location.name}),
    )
    providers = []
    for name in DEMO_PROVIDERS:
        provider = Provider(
            id=new_id("prv"),
            tenant_id=tenant_id,
            display_name=name,
            timezone=DEMO_TIMEZONE,
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        session.add(provider)
        session.flush()
        session.add_all(
            WorkingHours(
                id=new_id("wkh"),
                tenant_id=tenant_id,
                provider_id=provider.id,
                location_id=location.id,
                weekday=weekday,
                start_minute=9 * 60,
                end_minute=17 * 60,
            )
            for weekday in range(5)
        )
        _audit(session, tenant_id, now, "provider.create", provider.id, diff_of({}, {"name": name}))
        providers.append(provider)
    for name, minutes, modality in DEMO_SERVICES:
        service = Service(
            id=new_id("svc"),
            tenant_id=tenant_id,
            name=name,
            duration_minutes=minutes,
            buffer_before_minutes=0,
            buffer_after_minutes=0,
            slot_interval_minutes=15,
            min_notice_minutes=60,
            max_advance_days=90,
            cancellation_window_minutes=24 * 60,
            capacity=1,
            modality=modality,
            is_public=True,
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        session.add(service)
        session.flush()
        session.add_all(
            ServiceProvider(service_id=service.id, provider_id=p.id, tenant_id=tenant_id)
            for p in providers
        )
        _audit(session, tenant_id, now, "service.create", service.id, diff_of({}, {"name": name}))


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
