"""Admin UI sessions: an opaque cookie token, its hash in the database, a CSRF token.

Sign-ins (successful or not) and sign-outs are audited. A failed sign-in is
recorded in each clinic where the e-mail belongs to a user; when it belongs to
nobody it becomes a platform event (no clinic), and the typed e-mail is not kept:
it is sometimes a password typed in the wrong field.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import PLATFORM, append
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


def start_session(
    session: Session,
    user: User,
    now: datetime,
    ttl: timedelta,
    *,
    request_id: str | None = None,
    ip: str | None = None,
) -> str:
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
    _audit(session, user.tenant_id, user.id, "auth.sign_in", now, request_id, ip)
    return token


def record_failed_sign_in(
    session: Session,
    email: str,
    clinic_slug: str | None,
    matches: list[User],
    *,
    now: datetime,
    request_id: str | None = None,
    ip: str | None = None,
) -> None:
    """Audit a refused sign-in; ``matches`` are the users whose password was right."""
    if matches:  # right password at several clinics: they must name one
        failed = [(u, "clinic_required") for u in matches]
    else:
        failed = [
            (u, "wrong_password" if u.is_active else "inactive_user")
            for u in _users_by_email(session, email, clinic_slug)
        ]
    # Clinic order: concurrent failures lock the chain heads in the same order.
    for user, reason in sorted(failed, key=lambda f: f[0].tenant_id):
        _audit(session, user.tenant_id, user.id, "auth.sign_in", now, request_id, ip, reason)
    if not failed:
        _audit(session, PLATFORM, "", "auth.sign_in", now, request_id, ip, "unknown_email")


def _users_by_email(session: Session, email: str, clinic_slug: str | None) -> list[User]:
    stmt = sa.select(User).where(User.email == email.strip().lower())
    if clinic_slug:
        stmt = stmt.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.slug == clinic_slug)
    return list(session.scalars(stmt))


def _audit(
    session: Session,
    tenant_id: str,
    user_id: str,
    action: str,
    now: datetime,
    request_id: str | None,
    ip: str | None,
    failure: str | None = None,
) -> None:
    append(
        session,
        tenant_id=tenant_id,
        actor_type="user",
        actor_id=user_id,
        action=action,
        resource_type="user",
        resource_id=user_id or None,
        occurred_at=now,
        request_id=request_id,
        ip=ip,
        outcome="failure" if failure else "success",
        diff={"reason": failure} if failure else None,
    )


def resolve_session(session: Session, token: str, now: datetime) -> SignedIn | None:
    row = session.execute(
        sa.select(AdminSession, User)
        .join(User, User.id == AdminSession.user_id)
        .where(AdminSession.token_hash == _hash(token), User.is_active.is_(True))
    ).first()
    if row is None or row.AdminSession.expires_at <= now:
        return None
    return SignedIn(user=row.User, session=row.AdminSession)


def end_session(
    session: Session,
    token: str,
    *,
    now: datetime,
    request_id: str | None = None,
    ip: str | None = None,
) -> None:
    """Sign out: forget the session; audited as ``auth.sign_out`` if it existed."""
    ended = session.execute(
        sa.delete(AdminSession)
        .where(AdminSession.token_hash == _hash(token))
        .returning(AdminSession.user_id, AdminSession.tenant_id)
    ).first()
    if ended is not None:
        _audit(session, ended.tenant_id, ended.user_id, "auth.sign_out", now, request_id, ip)


def purge_expired(session: Session, now: datetime) -> int:
    result = session.execute(sa.delete(AdminSession).where(AdminSession.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
