"""Admin UI sessions: an opaque cookie token, its hash in the database, a CSRF token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.ids import new_id
from clinicbridge.core.models import AdminSession, Tenant, User
from clinicbridge.core.passwords import verify_password


@dataclass(frozen=True)
class SignedIn:
    user: User
    session: AdminSession


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_login(session: Session, email: str, password: str, clinic_slug: str | None) -> list[User]:
    """Active users with this e-mail whose password matches (one per clinic at most)."""
    stmt = sa.select(User).where(User.email == email.strip().lower(), User.is_active.is_(True))
    if clinic_slug:
        stmt = stmt.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.slug == clinic_slug)
    candidates = list(session.scalars(stmt))
    if not candidates:
        verify_password(None, password)  # same cost as a wrong password
        return []
    return [u for u in candidates if verify_password(u.password_hash, password)]


def start_session(session: Session, user: User, now: datetime, ttl: timedelta) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            id=new_id("ses"),
            user_id=user.id,
            tenant_id=user.tenant_id,
            token_hash=_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + ttl,
        )
    )
    user.last_login_at = now
    session.flush()
    return token


def resolve_session(session: Session, token: str, now: datetime) -> SignedIn | None:
    row = session.execute(
        sa.select(AdminSession, User)
        .join(User, User.id == AdminSession.user_id)
        .where(AdminSession.token_hash == _hash(token), User.is_active.is_(True))
    ).first()
    if row is None or row.AdminSession.expires_at <= now:
        return None
    return SignedIn(user=row.User, session=row.AdminSession)


def end_session(session: Session, token: str) -> None:
    session.execute(sa.delete(AdminSession).where(AdminSession.token_hash == _hash(token)))


def purge_expired(session: Session, now: datetime) -> int:
    result = session.execute(sa.delete(AdminSession).where(AdminSession.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
