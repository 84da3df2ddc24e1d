"""Dependencies shared by every router: the database, the caller, pagination.

``require(permission)`` is the only way a route gets a ``Ctx``; the app refuses
to start if an ``/api`` route declares no permission (see ``check_permissions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from clinicbridge.core.api_keys import authenticate_key, touch_key
from clinicbridge.core.clock import Clock
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import AuthenticationError, PermissionDeniedError
from clinicbridge.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from clinicbridge.core.rbac import PERMISSIONS
from clinicbridge.db.engine import Database

PERMISSION_ATTR = "__clinicbridge_permission__"
# Routes anyone may call: probes, metrics, API docs; the webhook inbox authenticates
# each request by the integration's own signature scheme instead.
# Routes without an API key; each authenticates its own way (provider signature,
# the voice integration's secret, a feed or booking-link token) or serves no PHI
# (public booking).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/webhooks/{integration_id}",
        "/voice/vapi/{integration_id}",
        "/ical/{token}.ics",
        "/public/{clinic_slug}/services",
        "/public/{clinic_slug}/availability",
        "/public/{clinic_slug}/bookings",
        "/b/{token}",
        "/receipts/{token}",
        "/pay/done",
        "/pay/cancelled",
        "/payouts/onboarding/refresh",
        "/payouts/onboarding/done",
        "/oauth/calendar/callback",
    }
)


def db_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def clock_of(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _db_dependency(request: Request) -> Database:
    # async: a plain attribute read must not cost a thread-pool hop
    return db_of(request)


DB = Annotated[Database, Depends(_db_dependency)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError()
    return token.strip()


async def authenticate(request: Request) -> Ctx:
    """The caller's Ctx from its API key; cached on the request."""
    cached: Ctx | None = getattr(request.state, "ctx", None)
    if cached is not None:
        return cached
    db = db_of(request)
    now = clock_of(request).now()
    token = _bearer(request)
    request_id = getattr(request.state, "request_id", None)
    ip = request.client.host if request.client else None
    ctx, stale = await db.run_read_core(lambda c: authenticate_key(c, token, now, request_id, ip))
    if stale:
        await anyio.to_thread.run_sync(_touch, db, ctx.actor_id, now)
    request.state.ctx = ctx
    request.state.tenant_id = ctx.tenant_id
    return ctx


def _touch(db: Database, key_id: str, now: datetime) -> None:
    with db.write() as session:
        touch_key(session, key_id, now)


def require(permission: str) -> Any:
    """Depend on an authenticated caller that holds ``permission``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    async def dependency(request: Request) -> Ctx:
        ctx = await authenticate(request)
        if not ctx.has(permission):
            raise PermissionDeniedError(permission)
        return ctx

    setattr(dependency, PERMISSION_ATTR, permission)
    return Depends(dependency)


def route_permission(route: APIRoute) -> str | None:
    """The permission a route requires, found anywhere in its dependency tree."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        permission = getattr(dep.call, PERMISSION_ATTR, None)
        if permission:
            return str(permission)
        stack.extend(dep.dependencies)
    return None


def iter_api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, descending into included routers (kept lazily by newer FastAPI)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from iter_api_routes(included.routes)


def check_permissions(app: FastAPI, extra_public: Callable[[str], bool]) -> None:
    """Deny by default: refuse an app with a route that declares no permission."""
    for route in iter_api_routes(app.router.routes):
        if route.path in PUBLIC_PATHS or extra_public(route.path):
            continue
        if route_permission(route) is None:
            raise RuntimeError(f"route {route.path} declares no permission (use require())")


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        starting_after: Annotated[
            str | None, Query(max_length=64, pattern=r"^[a-z]{2,5}_[0-9A-Z]{26}$")
        ] = None,
    ) -> None:
        self.limit = limit
        self.starting_after = starting_after


Paging = Annotated[PageParams, Depends()]
