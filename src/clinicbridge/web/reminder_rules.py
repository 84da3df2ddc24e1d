"""Admin UI: the clinic's reminder rules (its default and each service's own): when
before the appointment, on which channels in which order, and the quiet hours."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.messaging import reminder_rules
from clinicbridge.messaging.reminder_rules import DEFAULT_RULE
from clinicbridge.scheduling.models import Service
from clinicbridge.web.auth import checked_form, own_tenant, page_context, require_session
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("messages:read")]
Editor = Annotated[Ctx, require_session("tenant:write")]
_OFFSET = re.compile(r"^(\d{1,5})\s*(d|h|m|min)?$")
_UNITS = {"d": 1440, "h": 60, "m": 1, "min": 1, None: 1}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def offsets_text(minutes: list[int]) -> str:
    """``[1440, 90]`` as ``24h, 90m``."""
    return ", ".join(f"{m // 60}h" if m % 60 == 0 else f"{m}m" for m in minutes)


def parse_offsets(text: str) -> list[int]:
    """``24h, 2h``, ``2d`` or plain minutes ``90``; InvalidInputError naming ``offsets``."""
    found = []
    for part in (p.strip().lower() for p in text.split(",")):
        match = _OFFSET.match(part)
        if not match:
            raise InvalidInputError.one("offsets", "give times before the start, e.g. 24h, 2h")
        found.append(int(match.group(1)) * _UNITS[match.group(2)])
    return found


def _minute(field: str, text: str) -> int:
    match = _CLOCK.match(text.strip())
    if not match:
        raise InvalidInputError.one(field, "must be HH:MM")
    return int(match.group(1)) * 60 + int(match.group(2))


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _view(rule: Any) -> dict[str, Any]:
    return {
        "offsets": offsets_text([int(o) for o in rule.offsets]),
        "channels": ", ".join(rule.channels),
        "quiet_start": _clock(rule.quiet_start),
        "quiet_end": _clock(rule.quiet_end),
        "min_lead_minutes": rule.min_lead_minutes,
        "enabled": rule.enabled,
    }


def _page(
    request: Request, ctx: Ctx, extra: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = reminder_rules.list_rules(session, ctx)
        services = list(
            session.execute(
                scoped_select(Service, ctx.tenant_id)
                .with_only_columns(Service.id, Service.name)
                .order_by(Service.name)
            )
        )
    default = next((r for r in rows if r.service_id is None), None)
    names = {s.id: s.name for s in services}
    data |= {
        "default": _view(default or DEFAULT_RULE),
        "default_is_built_in": default is None,
        "service_rules": [
            {"service_id": r.service_id, "service": names.get(r.service_id or "", "?"), **_view(r)}
            for r in rows
            if r.service_id is not None
        ],
        "services": services,
        "errors": {},
        **(extra or {}),
    }
    return templates.TemplateResponse(request, "reminder_rules.html", data, status_code=status)


@router.get("/tenants/{tenant_id}/reminder-rules")
def reminder_rules_page(request: Request, tenant_id: str, ctx: Reader) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return _page(request, ctx)


@router.post("/tenants/{tenant_id}/reminder-rules/save")
async def save_rule(request: Request, tenant_id: str, ctx: Editor) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    scope = str(form.get("service_id", ""))[:64] or None
    typed = {k: str(form.get(k, ""))[:200] for k in
             ("offsets", "channels", "quiet_start", "quiet_end", "min_lead_minutes")}  # fmt: skip
    try:
        lead = typed["min_lead_minutes"].strip() or "0"
        if not lead.isdigit():
            raise InvalidInputError.one("min_lead_minutes", "must be a whole number of minutes")
        with db_of(request).write() as session:
            reminder_rules.save_rule(
                session,
                ctx,
                service_id=scope,
                offsets=parse_offsets(typed["offsets"]),
                channels=[c.strip().lower() for c in typed["channels"].split(",") if c.strip()],
                quiet_start=_minute("quiet_start", typed["quiet_start"]),
                quiet_end=_minute("quiet_end", typed["quiet_end"]),
                min_lead_minutes=int(lead),
                enabled=form.get("enabled") == "on",
            )
    except InvalidInputError as exc:
        errors = {e.field: e.message for e in exc.errors}
        return _page(request, ctx, {"errors": errors, "typed": typed, "typed_scope": scope}, 422)
    except ClinicBridgeError as exc:
        return _page(request, ctx, {"errors": {"service_id": exc.detail}}, exc.status)
    return _page(request, ctx, {"saved": True})


@router.post("/tenants/{tenant_id}/reminder-rules/delete")
async def delete_rule(request: Request, tenant_id: str, ctx: Editor) -> HTMLResponse:
    form = await checked_form(request, ctx, tenant_id)
    scope = str(form.get("service_id", ""))[:64] or None
    try:
        with db_of(request).write() as session:
            reminder_rules.delete_rule(session, ctx, scope)
    except ClinicBridgeError as exc:
        return _page(request, ctx, {"errors": {"service_id": exc.detail}}, exc.status)
    return _page(request, ctx, {"deleted": True})
