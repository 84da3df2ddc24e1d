"""``/payouts/onboarding/refresh`` and ``/payouts/onboarding/done``: where Stripe sends
a provider back from payout onboarding (``connect.start_onboarding`` sets them as the
account link's ``refresh_url`` and ``return_url``).

Public pages, no sign-in: the signed ``token`` (``payments.onboarding_links``) names the
clinic, the provider and the page. Refresh makes a new onboarding link (audited, as the
clinic's ``system`` principal ``payout_onboarding_link``) and redirects to it (303).
Done asks Stripe for the account's state and says, in plain words, whether onboarding
is complete, being reviewed by Stripe, or needs more information (with a link to
continue). The pages name the clinic only; never the provider, amounts or what Stripe
asks for. An altered token, another page's token, or a provider the token's clinic does
not have is one generic 404 page; an expired token a 410 page saying to ask the clinic
for a new link; Stripe unreachable a 503 page asking to try again later.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRouter

from clinicbridge.api.deps import db_of
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, InvalidInputError, NotFoundError
from clinicbridge.core.models import Tenant
from clinicbridge.payments import connect, onboarding_links
from clinicbridge.payments.connect_models import ConnectedAccount
from clinicbridge.payments.errors import PaymentProviderUnavailableError, StripeRefusedError
from clinicbridge.settings import Settings
from clinicbridge.web.pay_pages import HEADERS
from clinicbridge.web.routes import templates

router = APIRouter(include_in_schema=False)
PATHS = frozenset({onboarding_links.REFRESH_PATH, onboarding_links.DONE_PATH})
ACTOR_ID = "payout_onboarding_link"
TokenParam = Annotated[str, Query(alias="token", max_length=200)]


def _page(request: Request, state: str, status: int = 200, **extra: object) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "payout_onboarding.html",
        {"state": state, "clinic": None, "continue_url": None, **extra},
        status_code=status,
        headers=HEADERS,
    )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _ctx(request: Request, tenant_id: str) -> Ctx:
    return Ctx.system(
        tenant_id,
        ACTOR_ID,
        request.app.state.clock.now(),
        request_id=getattr(request.state, "request_id", None),
        ip=request.client.host if request.client else None,
    )


def _read(
    request: Request, token: str, purpose: onboarding_links.Purpose
) -> onboarding_links.OnboardingRef | HTMLResponse:
    key = onboarding_links.link_key(_settings(request))
    try:
        return onboarding_links.read(key, token, purpose, request.app.state.clock.now())
    except onboarding_links.ExpiredLinkError:
        return _page(request, "expired", 410)
    except onboarding_links.ReceiptLinkError:
        return _page(request, "not_found", 404)


def _clinic(request: Request, tenant_id: str) -> str | None:
    with db_of(request).read() as session:
        tenant = session.get(Tenant, tenant_id)
        return tenant.name if tenant is not None else None


def _failure(request: Request, exc: ClinicBridgeError, clinic: str | None) -> HTMLResponse:
    if isinstance(exc, NotFoundError):
        return _page(request, "not_found", 404)
    if isinstance(exc, StripeRefusedError):
        return _page(request, "unavailable", 502, clinic=clinic)
    if isinstance(exc, PaymentProviderUnavailableError | InvalidInputError):
        # Stripe unreachable, or the clinic's Stripe integration is switched off
        return _page(request, "unavailable", 503, clinic=clinic)
    raise exc


@router.get(onboarding_links.REFRESH_PATH)
async def onboarding_refresh(request: Request, token: TokenParam = "") -> Response:
    """The onboarding link expired or was used: a new one, and off to Stripe."""
    ref = _read(request, token, "refresh")
    if isinstance(ref, HTMLResponse):
        return ref
    ctx, db, settings = _ctx(request, ref.tenant_id), db_of(request), _settings(request)
    try:
        url = await anyio.to_thread.run_sync(
            connect.refresh_onboarding, db, settings, ctx, ref.provider_id
        )
    except ClinicBridgeError as exc:
        return _failure(request, exc, _clinic(request, ref.tenant_id))
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def state_of(row: ConnectedAccount) -> str:
    """``complete``, ``reviewing`` (nothing asked, Stripe still checking) or ``needs_info``."""
    if row.disabled_reason == "rejected" or (row.disabled_reason or "").startswith("rejected."):
        return "rejected"
    if not row.details_submitted or row.requirements_currently_due or row.requirements_past_due:
        return "needs_info"
    if not row.payouts_enabled or not row.transfers_active or row.disabled_reason:
        return "reviewing"
    return "complete"


@router.get(onboarding_links.DONE_PATH)
async def onboarding_done(request: Request, token: TokenParam = "") -> HTMLResponse:
    """Back from Stripe: the account's state as Stripe says it now."""
    ref = _read(request, token, "done")
    if isinstance(ref, HTMLResponse):
        return ref
    ctx, db, settings = _ctx(request, ref.tenant_id), db_of(request), _settings(request)
    clinic = _clinic(request, ref.tenant_id)
    try:
        row = await anyio.to_thread.run_sync(
            lambda: connect.refresh(db, settings, ctx, ref.provider_id, balance=False)
        )
    except ClinicBridgeError as exc:
        return _failure(request, exc, clinic)
    state = state_of(row)
    continue_url = None
    if state == "needs_info":
        key = onboarding_links.link_key(settings)
        again = onboarding_links.OnboardingRef(ref.tenant_id, ref.provider_id, "refresh")
        continue_url = onboarding_links.url(settings, key, again, ctx.now)
    return _page(request, state, clinic=clinic, continue_url=continue_url)
