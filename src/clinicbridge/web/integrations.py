"""Admin UI: a clinic's integrations, their health, connect forms, recent inbound events.

Connect forms come from each connector's credentials and settings schemas.
Credentials are password inputs that are never filled in, and never come back:
only the hints the API shows (last four characters) and "set" appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from clinicbridge.api.deps import clock_of, db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, NotFoundError
from clinicbridge.core.tenancy import get_tenant, scoped_select
from clinicbridge.integrations import service
from clinicbridge.integrations.health import HourBucket, IntegrationHealth, clinic_health, hourly
from clinicbridge.integrations.models import Alert, Integration
from clinicbridge.integrations.registry import IntegrationRegistry, integrations
from clinicbridge.integrations.schemas import IntegrationCreate, IntegrationUpdate
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.web.auth import CSRF_FIELD, checked_form, own_tenant, require_session, signed_in
from clinicbridge.web.routes import form_error, templates
from clinicbridge.webhooks.models import WebhookEvent
from clinicbridge.webhooks.processing import replay

router = APIRouter(prefix="/admin", include_in_schema=False)
Reader = Annotated[Ctx, require_session("integrations:read")]
Manager = Annotated[Ctx, require_session("integrations:manage")]
HookReader = Annotated[Ctx, require_session("webhooks:read")]
HookManager = Annotated[Ctx, require_session("webhooks:manage")]
RECENT_EVENTS = 10
_WORDS = {"api": "API", "sid": "SID", "id": "ID", "url": "URL"}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str  # the <input> type
    required: bool
    default: Any


_COMMON_SETTINGS = frozenset({"rate_limit_per_second"})


def form_fields(schema: dict[str, Any], *, secret: bool) -> list[FormField]:
    """Inputs for a connector's JSON schema; credentials are always password inputs."""
    required = set(schema.get("required", []))
    fields = []
    for name, spec in schema.get("properties", {}).items():
        spec = next((s for s in spec.get("anyOf", []) if s.get("type") != "null"), spec) | {
            k: v for k, v in spec.items() if k != "anyOf"
        }
        kind = {"integer": "number", "number": "number", "boolean": "checkbox"}.get(
            spec.get("type", ""), "url" if spec.get("format") == "uri" else "text"
        )
        words = [_WORDS.get(w, w) for w in name.split("_")]
        label = " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])
        default = None if secret else spec.get("default")
        fields.append(
            FormField(name, label, "password" if secret else kind, name in required, default)
        )
    # Settings every connector has (the base class's) come after the connector's own.
    return sorted(fields, key=lambda f: f.name in _COMMON_SETTINGS)


def catalog(registry: IntegrationRegistry) -> list[dict[str, Any]]:
    return [
        {
            "key": c.key,
            "name": c.display_name,
            "category": c.category,
            "inbound": c.verifier is not None,
            "credentials": form_fields(c.credentials_schema.model_json_schema(), secret=True),
            "settings": form_fields(c.settings_schema.model_json_schema(), secret=False),
        }
        for c in sorted(registry.connectors.values(), key=lambda c: c.display_name.lower())
    ]


def sparkline(buckets: list[HourBucket] | None) -> dict[str, str] | None:
    """Two polylines on a 230 by 40 canvas: hourly mean latency and error rate, 24 h."""
    if not buckets:
        return None
    peak = max((b.avg_ms or 0.0) for b in buckets) or 1.0
    x = [round(i * 230 / 23, 1) for i in range(24)]
    latency = [38 - 36 * (b.avg_ms or 0.0) / peak for b in buckets]
    errors = [38 - 36 * (b.failures / b.calls if b.calls else 0.0) for b in buckets]
    calls, failures = sum(b.calls for b in buckets), sum(b.failures for b in buckets)
    return {
        "latency": " ".join(f"{a},{b:.1f}" for a, b in zip(x, latency, strict=True)),
        "errors": " ".join(f"{a},{b:.1f}" for a, b in zip(x, errors, strict=True)),
        "label": f"Last 24 hours: {calls} calls, {failures} failed, "
        f"slowest hourly mean {peak:.0f} ms",
    }


def _registry(request: Request) -> IntegrationRegistry:
    return getattr(request.app.state, "integrations", integrations)


def _vault(request: Request) -> Vault:
    return shared_vault(db_of(request), request.app.state.settings.master_key_file)


def _recent_events(session: Session, tenant_id: str) -> dict[str, list[Any]]:
    """The last few events of each integration, without their (large) raw bodies."""
    e = WebhookEvent
    ranked = (
        sa.select(
            e.id,
            e.integration_id,
            e.provider_event_id,
            e.type,
            e.status,
            e.received_at,
            e.attempts,
            e.last_error,
            sa.func.row_number()
            .over(partition_by=e.integration_id, order_by=(e.received_at.desc(), e.id.desc()))
            .label("rn"),
        )
        .where(e.tenant_id == tenant_id)
        .subquery()
    )
    found: dict[str, list[Any]] = {}
    for row in session.execute(
        sa.select(ranked).where(ranked.c.rn <= RECENT_EVENTS).order_by(ranked.c.rn)
    ):
        found.setdefault(row.integration_id, []).append(row)
    return found


def _data(request: Request, ctx: Ctx, only: str | None, narrow: bool) -> dict[str, Any]:
    found = signed_in(request)
    assert found is not None
    settings, registry = request.app.state.settings, _registry(request)
    now = clock_of(request).now()  # not ctx.now: a connection test may have just logged a call
    with db_of(request).read() as session:
        rows = session.scalars(scoped_select(Integration, ctx.tenant_id).order_by(Integration.id))
        items = [
            service.to_out(r, registry.connector(r.connector), settings.public_base_url)
            for r in rows
        ]
        if only is not None and all(i.id != only for i in items):
            raise NotFoundError("No such integration.")
        if only is not None and narrow:  # an htmx partial for one integration
            items = [i for i in items if i.id == only]
        report = clinic_health(session, ctx.tenant_id, now, only=[i.id for i in items])
        series = hourly(session, ctx.tenant_id, now)
        events = _recent_events(session, ctx.tenant_id) if ctx.has("webhooks:read") else {}
        alerts = session.scalars(
            scoped_select(Alert, ctx.tenant_id)
            .where(Alert.subject_type.in_(("integration", "tenant")), Alert.status == "open")
            .order_by(Alert.id)
        ).all()
        tenant = get_tenant(session, ctx.tenant_id)
    health: dict[str, IntegrationHealth] = {h.integration_id: h for h in report.integrations}
    return {
        "ctx": ctx,
        "me": found.user,
        "tenant": tenant,
        "csrf_token": found.session.csrf_token,
        "csrf_field": CSRF_FIELD,
        "integrations": items,
        "names": {i.id: i.name for i in items},
        "health": health,
        "sparks": {i.id: sparkline(series.get(i.id)) for i in items},
        "events": events,
        "alerts": alerts,
        "dead_jobs": report.dead_jobs,
        "catalog": catalog(registry),
    }


def _page(
    request: Request, ctx: Ctx, partial_name: str, extra: dict[str, Any], status: int = 200
) -> HTMLResponse:
    htmx = bool(request.headers.get("hx-request"))
    data = {**_data(request, ctx, extra.get("only"), htmx), **extra}
    if htmx and extra.get("only"):
        data["i"] = data["integrations"][0]
    name = partial_name if htmx else "integrations.html"
    return templates.TemplateResponse(request, name, data, status_code=status)


async def _checked(request: Request, ctx: Ctx, tenant_id: str) -> dict[str, Any]:
    return dict((await checked_form(request, ctx, tenant_id)).items())


@router.get("/tenants/{tenant_id}/integrations")
def integrations_page(
    request: Request, tenant_id: str, ctx: Reader, connect: str | None = None
) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return _page(request, ctx, "integrations.html", {"connect": connect})


@router.get("/tenants/{tenant_id}/integrations/connect/{connector}")
def connect_form(request: Request, tenant_id: str, connector: str, ctx: Manager) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    if _registry(request).connector(connector) is None:
        raise NotFoundError("No such connector.")
    return _page(request, ctx, "_integration_connect.html", {"connect": connector})


@router.post("/tenants/{tenant_id}/integrations")
async def connect(request: Request, tenant_id: str, ctx: Manager) -> HTMLResponse:
    form = await _checked(request, ctx, tenant_id)
    key = str(form.get("connector", ""))[:64]

    def section(prefix: str) -> dict[str, str]:
        # Empty inputs are left out so the schema's defaults apply.
        return {
            k.removeprefix(prefix): str(v).strip()
            for k, v in form.items()
            if k.startswith(prefix) and str(v).strip()
        }

    settings = section("settings.")
    try:
        data = IntegrationCreate(
            connector=key,
            name=str(form.get("name", "")),
            credentials=section("credentials."),
            settings=settings,
        )
        with db_of(request).write() as session:
            created = service.create_integration(
                session, ctx, _vault(request), _registry(request), data
            )
            name, secret = created.integration.name, created.generated_secret
    except (ValidationError, ClinicBridgeError) as exc:
        # Settings are refilled; credentials never are.
        error = {
            "connect": key,
            "connect_error": form_error(exc),
            "typed": settings,
            "typed_name": str(form.get("name", ""))[:200],
        }
        return _page(request, ctx, "_integration_connect.html", error, 422)
    done = {"connected": name, "generated_secret": secret}
    return _page(request, ctx, "_integration_connect.html", done)


@router.post("/tenants/{tenant_id}/integrations/{integration_id}/test")
async def test_connection(
    request: Request, tenant_id: str, integration_id: str, ctx: Manager
) -> HTMLResponse:
    await _checked(request, ctx, tenant_id)
    # The provider call runs in a thread: it may take seconds, the event loop must not wait.
    result, _ = await anyio.to_thread.run_sync(
        partial(
            service.test_integration,
            db_of(request),
            ctx,
            _vault(request),
            _registry(request),
            integration_id,
            transport=getattr(request.app.state, "outbound_transport", None),
        )
    )
    extra = {"only": integration_id, "tested": result}
    return _page(request, ctx, "_integration_card.html", extra)


@router.post("/tenants/{tenant_id}/integrations/{integration_id}/{action}")
async def enable_or_disable(
    request: Request,
    tenant_id: str,
    integration_id: str,
    action: Literal["enable", "disable"],
    ctx: Manager,
) -> HTMLResponse:
    await _checked(request, ctx, tenant_id)
    change = IntegrationUpdate(enabled=action == "enable")
    with db_of(request).write() as session:
        registry = _registry(request)
        service.update_integration(session, ctx, _vault(request), registry, integration_id, change)
    return _page(request, ctx, "_integration_card.html", {"only": integration_id})


@router.get("/tenants/{tenant_id}/integrations/{integration_id}/events")
def events(request: Request, tenant_id: str, integration_id: str, ctx: HookReader) -> HTMLResponse:
    own_tenant(ctx, tenant_id)
    return _page(request, ctx, "_integration_events.html", {"only": integration_id})


@router.post("/tenants/{tenant_id}/integrations/{integration_id}/events/{event_id}/replay")
async def replay_event(
    request: Request, tenant_id: str, integration_id: str, event_id: str, ctx: HookManager
) -> HTMLResponse:
    await _checked(request, ctx, tenant_id)
    with db_of(request).write() as session:
        event = session.get(WebhookEvent, event_id)
        if event is None or (event.tenant_id, event.integration_id) != (
            ctx.tenant_id,
            integration_id,
        ):
            raise NotFoundError("No such webhook event.")
        replay(session, ctx.tenant_id, event_id, ctx.now)
    extra = {"only": integration_id, "replayed": event_id}
    return _page(request, ctx, "_integration_events.html", extra)
