"""Admin UI sessions: cookie in, ``Ctx`` out; CSRF checked on every form post."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from clinicbridge.api.deps import PERMISSION_ATTR, clock_of, db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, NotFoundError, PermissionDeniedError
from clinicbridge.core.rbac import PERMISSIONS
from clinicbridge.core.roles import role_permissions
from clinicbridge.core.sessions import SignedIn, resolve_session
from clinicbridge.core.tenancy import get_tenant
from clinicbridge.settings import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(ClinicBridgeError):
    status = 401


class CsrfError(ClinicBridgeError):
    status = 403
    type_slug = "csrf"
    title = "Form expired"

    def __init__(self) -> None:
        super().__init__("The form was stale or forged; reload the page and try again.")


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless Secure, Path=/, no Domain.
    return "__Host-cb_session" if settings.secure_cookies else "cb_session"


def signed_in(request: Request) -> SignedIn | None:
    cached = getattr(request.state, "signed_in", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    token = request.cookies.get(cookie_name(request.app.state.settings))
    if not token:
        return None
    with db_of(request).read() as session:
        found = resolve_session(session, token, clock_of(request).now())
    request.state.signed_in = found
    return found


def _session_ctx(request: Request) -> tuple[Ctx, SignedIn]:
    found = signed_in(request)
    if found is None:
        raise LoginRequired()
    with db_of(request).read() as session:
        permissions = role_permissions(session, found.user.tenant_id, found.user.role)
    ctx = Ctx(
        tenant_id=found.user.tenant_id,
        actor_type="user",
        actor_id=found.user.id,
        role=found.user.role,
        permissions=permissions or frozenset(),
        now=clock_of(request).now(),
        request_id=getattr(request.state, "request_id", None),
        ip=request.client.host if request.client else None,
    )
    request.state.tenant_id = ctx.tenant_id
    return ctx, found


async def check_csrf(request: Request, found: SignedIn) -> FormData:
    form = await request.form()
    sent = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD, ""))
    if not hmac.compare_digest(sent.encode(), found.session.csrf_token.encode()):
        raise CsrfError()
    return form


def require_session(permission: str) -> Any:
    """Like ``api.deps.require``, for the admin UI: a signed-in user holding ``permission``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def dependency(request: Request) -> Ctx:
        ctx, _ = _session_ctx(request)
        if not ctx.has(permission):
            raise PermissionDeniedError(permission)
        return ctx

    setattr(dependency, PERMISSION_ATTR, permission)
    return Depends(dependency)


def own_tenant(ctx: Ctx, tenant_id: str) -> None:
    """Admin pages name the clinic in the URL; another clinic's is simply not found."""
    if ctx.tenant_id != tenant_id:
        raise NotFoundError("No such clinic.")


async def checked_form(request: Request, ctx: Ctx, tenant_id: str) -> FormData:
    """The posted form of a signed-in user of this clinic, after the CSRF check."""
    own_tenant(ctx, tenant_id)
    found = signed_in(request)
    assert found is not None  # require_session ran first
    return await check_csrf(request, found)


def page_context(request: Request, ctx: Ctx, session: Session) -> dict[str, Any]:
    """What every signed-in page of a clinic shows: who, which clinic, the CSRF token."""
    found = signed_in(request)
    assert found is not None
    return {
        "ctx": ctx,
        "me": found.user,
        "tenant": get_tenant(session, ctx.tenant_id),
        "csrf_token": found.session.csrf_token,
        "csrf_field": CSRF_FIELD,
    }
