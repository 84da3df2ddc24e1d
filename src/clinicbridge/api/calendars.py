"""``/api/v1/providers/{provider_id}/calendar-accounts`` and ``.../calendar-connections``,
and the OAuth callback ``GET /oauth/calendar/callback`` (public: ``state`` is the
credential, checked against the single-use request it names).

Permissions: authorizing a practitioner's Google or Microsoft account hands ClinicBridge
a token, so it takes ``integrations:manage`` (``integrations:read`` to list accounts);
connecting calendars and syncing them is schedule configuration: ``schedule:write``
(``schedule:read`` to see their status).
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.calendars import conflicts, connections, oauth
from clinicbridge.calendars.errors import OAuthStateError
from clinicbridge.calendars.schemas import (
    AuthorizationStart,
    AuthorizationStarted,
    CalendarAccountOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    SyncStarted,
)
from clinicbridge.core.context import Ctx
from clinicbridge.integrations.registry import IntegrationRegistry, integrations
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault

router = APIRouter(tags=["calendars"], route_class=IdempotentRoute)
callback_router = APIRouter(tags=["calendars"])
AccountReader = Annotated[Ctx, require("integrations:read")]
AccountManager = Annotated[Ctx, require("integrations:manage")]
Reader = Annotated[Ctx, require("schedule:read")]
Writer = Annotated[Ctx, require("schedule:write")]
ACCOUNTS = "/providers/{provider_id}/calendar-accounts"
CONNECTIONS = "/providers/{provider_id}/calendar-connections"


def _registry(request: Request) -> IntegrationRegistry:
    return getattr(request.app.state, "integrations", integrations)


def _vault(request: Request) -> Vault:
    return shared_vault(request.app.state.db, request.app.state.settings.master_key_file)


@router.post(ACCOUNTS + "/authorize", status_code=201, response_model=AuthorizationStarted)
def authorize(
    provider_id: str, body: AuthorizationStart, request: Request, db: DB, ctx: AccountManager
) -> AuthorizationStarted:
    """The URL to send the practitioner to (valid 15 minutes, once)."""
    with db.write() as session:
        started = oauth.start_authorization(
            session,
            ctx,
            _vault(request),
            _registry(request),
            provider_id,
            body.integration_id,
            write=body.export_bookings,
            base_url=request.app.state.settings.public_base_url,
        )
        return AuthorizationStarted(
            authorization_url=started.authorization_url,
            redirect_uri=started.redirect_uri,
            scopes=started.scopes,
            expires_at=started.expires_at,
        )


@router.get(ACCOUNTS, response_model=ListOut[CalendarAccountOut])
def list_accounts(provider_id: str, db: DB, ctx: AccountReader) -> ListOut[CalendarAccountOut]:
    with db.read() as session:
        rows = connections.list_accounts(session, ctx, provider_id)
        return ListOut(data=[CalendarAccountOut.model_validate(r) for r in rows])


@router.delete(ACCOUNTS + "/{account_id}", status_code=204)
def delete_account(provider_id: str, account_id: str, db: DB, ctx: AccountManager) -> Response:
    """Forget the authorization and the connections using it; the conflict alerts their
    blocks caused are resolved."""
    with db.write() as session:
        connections.delete_account(session, ctx, provider_id, account_id)
    conflicts.check_provider(db, ctx.tenant_id, provider_id, ctx.now)
    return Response(status_code=204)


class CalendarOut(BaseModel):
    url: str
    name: str | None


@router.get("/integrations/{integration_id}/calendars", response_model=ListOut[CalendarOut])
def discover_calendars(
    integration_id: str, request: Request, db: DB, ctx: AccountReader
) -> ListOut[CalendarOut]:
    """A CalDAV account's calendar collections (their URLs go in ``calendar``)."""
    found = connections.discover_calendars(db, ctx, _vault(request), integration_id)
    return ListOut(data=[CalendarOut(url=c.url, name=c.name) for c in found])


@router.post(CONNECTIONS, status_code=201, response_model=ConnectionOut)
def create_connection(
    provider_id: str, body: ConnectionCreate, request: Request, db: DB, ctx: Writer
) -> ConnectionOut:
    """Connect a calendar; its first sync is queued at once."""
    row, _job = connections.create_connection(
        db, ctx, _vault(request), _registry(request), provider_id, body
    )
    return connections.to_out(row, ctx.now)


@router.get(CONNECTIONS, response_model=ListOut[ConnectionOut])
def list_connections(provider_id: str, db: DB, ctx: Reader) -> ListOut[ConnectionOut]:
    with db.read() as session:
        rows = connections.list_connections(session, ctx, provider_id)
        return ListOut(data=[connections.to_out(r, ctx.now) for r in rows])


@router.get(CONNECTIONS + "/{connection_id}", response_model=ConnectionOut)
def get_connection(provider_id: str, connection_id: str, db: DB, ctx: Reader) -> ConnectionOut:
    with db.read() as session:
        row = connections.get_connection(session, ctx, provider_id, connection_id)
        return connections.to_out(row, ctx.now)


@router.patch(CONNECTIONS + "/{connection_id}", response_model=ConnectionOut)
def update_connection(
    provider_id: str, connection_id: str, body: ConnectionUpdate, db: DB, ctx: Writer
) -> ConnectionOut:
    """Switch ``import_busy`` and/or ``export_bookings`` (one must stay on). Import off:
    the imported blocks go at once (and the conflict alerts they caused are resolved),
    push and polling stop; on: a full sync is queued. Export on: the provider's future
    bookings are written too."""
    with db.write() as session:
        row = connections.update_connection(session, ctx, provider_id, connection_id, body)
        out = connections.to_out(row, ctx.now)
    if body.import_busy is False:
        conflicts.check_provider(db, ctx.tenant_id, provider_id, ctx.now)
    return out


@router.post(CONNECTIONS + "/{connection_id}/sync", status_code=202, response_model=SyncStarted)
def sync_now(provider_id: str, connection_id: str, db: DB, ctx: Writer) -> SyncStarted:
    with db.write() as session:
        job = connections.sync_now(session, ctx, provider_id, connection_id)
        return SyncStarted(job_id=job.id, connection_id=connection_id, created=job.created)


@router.delete(CONNECTIONS + "/{connection_id}", status_code=204)
def delete_connection(provider_id: str, connection_id: str, db: DB, ctx: Writer) -> Response:
    """Delete a connection; its imported blocks go with it, and the conflict alerts
    they caused are resolved."""
    with db.write() as session:
        connections.delete_connection(session, ctx, provider_id, connection_id)
    conflicts.check_provider(db, ctx.tenant_id, provider_id, ctx.now)
    return Response(status_code=204)


def _page(title: str, message: str, status: int) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><body style='font-family:sans-serif'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@callback_router.get(oauth.CALLBACK_PATH, response_class=HTMLResponse, include_in_schema=False)
def oauth_callback(
    request: Request,
    db: DB,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> HTMLResponse:
    """Where Google or Microsoft sends the practitioner back after consenting."""
    try:
        done = oauth.finish_authorization(
            db,
            _vault(request),
            _registry(request),
            state=state,
            code=code,
            error=error,
            now=request.app.state.clock.now(),
        )
    except OAuthStateError as exc:
        return _page("Calendar not connected", exc.detail, 400)
    if not done.ok:
        return _page("Calendar not connected", done.message, 400)
    return _page("Calendar connected", f"{done.message} You can close this window.", 200)
