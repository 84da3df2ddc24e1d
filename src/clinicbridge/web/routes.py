"""Admin UI pages: login, logout, and a clinic's users and API keys."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from clinicbridge.api.deps import clock_of, db_of
from clinicbridge.audit import record
from clinicbridge.core import api_keys, users
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, validation_errors
from clinicbridge.core.rbac import BUILTIN_ROLES
from clinicbridge.core.roles import list_roles
from clinicbridge.core.schemas import ApiKeyCreate, UserCreate
from clinicbridge.core.sessions import (
    end_session,
    find_login,
    record_failed_sign_in,
    start_session,
)
from clinicbridge.core.tenancy import get_tenant
from clinicbridge.jobs import queue as jobs_queue
from clinicbridge.web.auth import (
    CSRF_FIELD,
    check_csrf,
    checked_form,
    cookie_name,
    own_tenant,
    require_session,
    signed_in,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/admin", include_in_schema=False)
LOGIN_CSRF_COOKIE = "cb_login_csrf"
_PUBLIC = frozenset({"/admin", "/admin/login", "/admin/logout"})
JobState = Literal["dead", "failed", "pending", "running", "succeeded", "cancelled"]


def is_web_path(path: str) -> bool:
    """Admin pages that need no permission (everything else declares one)."""
    return path in _PUBLIC


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(HERE / "static"))


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html", {"error": error, "login_csrf": token}, status_code=status
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.secure_cookies,
        path="/admin",
    )
    return response


@router.get("")
def index(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return RedirectResponse("/admin/login", status_code=303)
    return RedirectResponse(f"/admin/tenants/{found.user.tenant_id}", status_code=303)


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    sent = str(form.get("login_csrf", ""))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _login_page(request, "The form expired; please try again.", 403)
    email = str(form.get("email", ""))[:320]
    password = str(form.get("password", ""))[:256]
    clinic = str(form.get("clinic", "")).strip()[:63] or None
    settings = request.app.state.settings
    db = db_of(request)
    now, request_id, ip = clock_of(request).now(), _request_id(request), _ip(request)
    with db.write() as session:
        matches = find_login(session, email, password, clinic)
        if len(matches) != 1:
            record_failed_sign_in(
                session, email, clinic, matches, now=now, request_id=request_id, ip=ip
            )
            message = (
                "This e-mail belongs to several clinics: enter the clinic's short name too."
                if len(matches) > 1
                else "Wrong e-mail or password."
            )
            return _login_page(request, message, 401)
        user = matches[0]
        ttl = timedelta(hours=settings.session_ttl_hours)
        token = start_session(session, user, now, ttl, request_id=request_id, ip=ip)
        tenant_id = user.tenant_id
    response = RedirectResponse(f"/admin/tenants/{tenant_id}", status_code=303)
    response.set_cookie(
        cookie_name(settings),
        token,
        max_age=settings.session_ttl_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    settings = request.app.state.settings
    found = signed_in(request)
    if found is not None:
        await check_csrf(request, found)
        token = request.cookies.get(cookie_name(settings), "")
        with db_of(request).write() as session:
            end_session(
                session,
                token,
                now=clock_of(request).now(),
                request_id=_request_id(request),
                ip=_ip(request),
            )
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(cookie_name(settings), path="/")
    return response


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _page_data(request: Request, ctx: Ctx) -> dict[str, Any]:
    found = signed_in(request)
    assert found is not None
    with db_of(request).read() as session:
        tenant = get_tenant(session, ctx.tenant_id)
        staff = (
            users.list_users(session, ctx, limit=100, starting_after=None).items
            if ctx.has("users:read")
            else []
        )
        keys = (
            api_keys.list_keys(session, ctx, limit=100, starting_after=None).items
            if ctx.has("api_keys:read")
            else []
        )
        role_names = [r.name for r in list_roles(session, ctx)]
    return {
        "ctx": ctx,
        "me": found.user,
        "tenant": tenant,
        "users": staff,
        "keys": keys,
        "roles": role_names,
        "builtin_roles": list(BUILTIN_ROLES),
        "csrf_token": found.session.csrf_token,
        "csrf_field": CSRF_FIELD,
    }


def _render(
    request: Request, ctx: Ctx, partial: str, extra: dict[str, Any], status: int = 200
) -> HTMLResponse:
    name = partial if request.headers.get("hx-request") else "tenant.html"
    data = {**_page_data(request, ctx), **extra}
    return templates.TemplateResponse(request, name, data, status_code=status)


def form_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{e.field}: {e.message}" for e in validation_errors(exc.errors()))
    assert isinstance(exc, ClinicBridgeError)
    return exc.detail


@router.get("/tenants/{tenant_id}")
def tenant_page(
    request: Request, tenant_id: str, ctx: Annotated[Ctx, require_session("tenant:read")]
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return templates.TemplateResponse(request, "tenant.html", _page_data(request, ctx))


@router.post("/tenants/{tenant_id}/api-keys")
async def create_api_key(
    request: Request, tenant_id: str, ctx: Annotated[Ctx, require_session("api_keys:write")]
) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    try:
        data = ApiKeyCreate(name=str(form.get("name", "")), role=str(form.get("role", "")))
        with db_of(request).write() as session:
            key, raw = api_keys.create_key(session, ctx, data)
            name = key.name
    except (ValidationError, ClinicBridgeError) as exc:
        return _render(request, ctx, "_api_keys.html", {"key_error": form_error(exc)}, 422)
    return _render(request, ctx, "_api_keys.html", {"new_key": raw, "new_key_name": name})


@router.post("/tenants/{tenant_id}/api-keys/{key_id}/revoke")
async def revoke_api_key(
    request: Request,
    tenant_id: str,
    key_id: str,
    ctx: Annotated[Ctx, require_session("api_keys:write")],
) -> HTMLResponse:
    await checked_form(request, ctx, tenant_id)
    try:
        with db_of(request).write() as session:
            api_keys.revoke_key(session, ctx, key_id)
    except ClinicBridgeError as exc:
        return _render(request, ctx, "_api_keys.html", {"key_error": form_error(exc)}, exc.status)
    return _render(request, ctx, "_api_keys.html", {})


@router.post("/tenants/{tenant_id}/users")
async def create_staff_user(
    request: Request, tenant_id: str, ctx: Annotated[Ctx, require_session("users:write")]
) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    try:
        data = UserCreate(
            email=str(form.get("email", "")),
            role=str(form.get("role", "")),
            display_name=str(form.get("display_name", "")),
        )
        with db_of(request).write() as session:
            user, password = users.create_user(session, ctx, data)
            email = user.email
    except (ValidationError, ClinicBridgeError) as exc:
        return _render(request, ctx, "_users.html", {"user_error": form_error(exc)}, 422)
    return _render(
        request, ctx, "_users.html", {"new_user_email": email, "new_user_password": password}
    )


@router.post("/tenants/{tenant_id}/users/{user_id}/delete")
async def delete_staff_user(
    request: Request,
    tenant_id: str,
    user_id: str,
    ctx: Annotated[Ctx, require_session("users:write")],
) -> HTMLResponse:
    await checked_form(request, ctx, tenant_id)
    try:
        with db_of(request).write() as session:
            users.delete_user(session, ctx, user_id)
    except ClinicBridgeError as exc:
        return _render(request, ctx, "_users.html", {"user_error": form_error(exc)}, exc.status)
    return _render(request, ctx, "_users.html", {})


def _jobs_page(
    request: Request, ctx: Ctx, state: str, extra: dict[str, Any], status: int = 200
) -> HTMLResponse:
    with db_of(request).read() as session:
        found = jobs_queue.list_jobs(session, tenant_id=ctx.tenant_id, state=state, limit=100)
        data = {**_page_data(request, ctx), "jobs": found.items, "state": state, **extra}
    name = "_jobs.html" if request.headers.get("hx-request") else "jobs.html"
    return templates.TemplateResponse(request, name, data, status_code=status)


@router.get("/tenants/{tenant_id}/jobs")
def jobs_page(
    request: Request,
    tenant_id: str,
    ctx: Annotated[Ctx, require_session("jobs:read")],
    state: JobState = "dead",
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return _jobs_page(request, ctx, state, {})


@router.post("/tenants/{tenant_id}/jobs/{job_id}/retry")
async def retry_job(
    request: Request,
    tenant_id: str,
    job_id: str,
    ctx: Annotated[Ctx, require_session("jobs:manage")],
    state: JobState = "dead",
) -> HTMLResponse:
    await checked_form(request, ctx, tenant_id)
    try:
        with db_of(request).write() as session:
            job = jobs_queue.retry_job(session, job_id, ctx.now, tenant_id=ctx.tenant_id)
            record(session, ctx, "job.retry", "job", job.id, diff={"kind": job.kind})
    except ClinicBridgeError as exc:
        return _jobs_page(request, ctx, state, {"job_error": exc.detail}, exc.status)
    return _jobs_page(request, ctx, state, {"retried": job_id})


async def on_login_required(request: Request, exc: Exception) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/admin/login"})
    return RedirectResponse("/admin/login", status_code=303)
