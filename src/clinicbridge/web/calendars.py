"""Admin UI: the clinic's calendar connections, per provider: last sync, lag, status
(``needs_reauth`` when the practitioner must authorize again), the last error, a "Sync
now" button, and the open calendar alerts (conflicts with bookings, failing syncs,
bookings the calendar could not verify, revoked authorizations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from clinicbridge.api.deps import db_of
from clinicbridge.calendars import alerts as calendar_alerts
from clinicbridge.calendars import conflicts, connections
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.schemas import ConnectionOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.integrations.models import Alert, Integration
from clinicbridge.scheduling.models import Provider
from clinicbridge.web.auth import checked_form, own_tenant, page_context, require_session
from clinicbridge.web.routes import templates

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("schedule:read")]
Writer = Annotated[Ctx, require_session("schedule:write")]
RULES = (
    conflicts.RULE,
    calendar_alerts.FAILING_RULE,
    calendar_alerts.UNVERIFIED_RULE,
    calendar_alerts.RULE,
)
CONNECTOR_NAMES = {
    "google_calendar": "Google Calendar",
    "microsoft_calendar": "Microsoft 365",
    "caldav": "CalDAV",
}


@dataclass(frozen=True)
class ProviderCalendars:
    id: str
    name: str
    connections: list[ConnectionOut]


def lag_text(seconds: float | None) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``2 d``; "never" before the first successful sync."""
    if seconds is None:
        return "never synced"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _data(request: Request, ctx: Ctx) -> dict[str, Any]:
    with db_of(request).read() as session:
        data = page_context(request, ctx, session)
        rows = session.scalars(
            scoped_select(CalendarConnection, ctx.tenant_id).order_by(CalendarConnection.id)
        ).all()
        providers = dict(
            session.execute(
                sa.select(Provider.id, Provider.display_name).where(
                    Provider.tenant_id == ctx.tenant_id
                )
            ).all()
        )
        integrations = dict(
            session.execute(
                sa.select(Integration.id, Integration.name).where(
                    Integration.tenant_id == ctx.tenant_id
                )
            ).all()
        )
        alerts = session.scalars(
            scoped_select(Alert, ctx.tenant_id)
            .where(Alert.status == "open", Alert.rule.in_(RULES))
            .order_by(Alert.opened_at.desc(), Alert.id)
        ).all()
    grouped: dict[str, list[ConnectionOut]] = {}
    for row in rows:
        grouped.setdefault(row.provider_id, []).append(connections.to_out(row, ctx.now))
    listed = [ProviderCalendars(pid, providers.get(pid, pid), c) for pid, c in grouped.items()]
    data |= {
        "providers": sorted(listed, key=lambda p: (p.name.lower(), p.id)),
        "provider_names": providers,
        "integration_names": integrations,
        "connector_names": CONNECTOR_NAMES,
        "alerts": alerts,
        "lag_text": lag_text,
        "can_sync": ctx.has("schedule:write"),
    }
    return data


def _page(
    request: Request, ctx: Ctx, extra: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    data = _data(request, ctx) | (extra or {})
    htmx = bool(request.headers.get("hx-request"))
    name = "_calendar_list.html" if htmx else "calendars.html"
    return templates.TemplateResponse(request, name, data, status_code=status)


@router.get("/tenants/{tenant_id}/calendars")
def calendars_page(request: Request, tenant_id: str, ctx: Reader) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return _page(request, ctx)


@router.post("/tenants/{tenant_id}/calendars/{connection_id}/sync")
async def sync_now(
    request: Request, tenant_id: str, connection_id: str, ctx: Writer
) -> HTMLResponse:
    await checked_form(request, ctx, tenant_id)
    try:
        with db_of(request).write() as session:
            row = session.scalar(
                scoped_select(CalendarConnection, ctx.tenant_id).where(
                    CalendarConnection.id == connection_id
                )
            )
            if row is None:
                return _page(request, ctx, {"flash_error": "No such calendar connection."}, 404)
            job = connections.sync_now(session, ctx, row.provider_id, connection_id)
    except ClinicBridgeError as exc:
        return _page(request, ctx, {"flash_error": exc.detail, "flash_for": connection_id},
                     exc.status)  # fmt: skip
    flash = "Sync queued." if job.created else "A sync was already queued or running."
    return _page(request, ctx, {"flash": flash, "flash_for": connection_id}, 202)
