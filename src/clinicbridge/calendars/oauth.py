"""Authorization-code flow with PKCE (S256) for Google and Microsoft calendars (Authlib).

1. ``start_authorization`` (staff, ``integrations:manage``): a single-use request bound
   to the clinic, the provider (practitioner) and the integration, with a random
   ``state`` (only its SHA-256 is stored) and a PKCE verifier (sealed in the vault).
   Answers the provider's authorization URL: redirect URI
   ``CLINICBRIDGE_BASE_URL/oauth/calendar/callback``, the least scopes the connector
   needs (write access only when bookings are to be exported).
2. ``finish_authorization`` (the public callback, authenticated by ``state`` alone):
   the request is marked used before anything else (a replayed link does nothing), the
   code is exchanged with the verifier outside any transaction, and the account is
   stored with its tokens sealed in the vault, bound to the account id.

Errors of the token endpoint become ``OAuthError`` here (``token_request``) with the
provider's error code only: its description may quote anything.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy.orm import Session

from clinicbridge.audit import record, record_system
from clinicbridge.calendars import alerts
from clinicbridge.calendars.errors import OAuthError, OAuthStateError, ReauthorizationRequired
from clinicbridge.calendars.models import CalendarAccount, CalendarConnection, CalendarOAuthRequest
from clinicbridge.calendars.runtime import connector_for, context
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ExternalServiceError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.secrets import Secret
from clinicbridge.core.tenancy import get_scoped
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.integrations.connectors.oauth_calendar import OAuthCalendarConnector
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.scheduling.models import Provider
from clinicbridge.vault.service import Vault

log = logging.getLogger("clinicbridge.calendars")
CALLBACK_PATH = "/oauth/calendar/callback"
REQUEST_TTL = timedelta(minutes=15)
VERIFIER_FIELD = "code_verifier"


def redirect_uri(base_url: str) -> str:
    return f"{base_url.rstrip('/')}{CALLBACK_PATH}"


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # None: keep the one we have (Google does not rotate)
    expires_in: int
    scopes: list[str] | None


def oauth_integration(
    session: Session, ctx: Ctx, registry: IntegrationRegistry, integration_id: str
) -> tuple[Integration, OAuthCalendarConnector]:
    """The clinic's enabled Google/Microsoft calendar integration (another clinic's: 404)."""
    row = session.scalar(
        sa.select(Integration).where(
            Integration.tenant_id == ctx.tenant_id, Integration.id == integration_id
        )
    )
    if row is None:
        raise NotFoundError("No such integration.")
    connector = connector_for(row, registry)
    if not isinstance(connector, OAuthCalendarConnector):
        raise InvalidInputError.one(
            "integration_id", "not a Google or Microsoft calendar integration", "not_oauth"
        )
    if not row.enabled:
        raise InvalidInputError.one("integration_id", "the integration is disabled", "disabled")
    return row, connector


@dataclass(frozen=True)
class Started:
    request_id: str
    authorization_url: str
    scopes: list[str]
    redirect_uri: str
    expires_at: datetime


def start_authorization(
    session: Session,
    ctx: Ctx,
    vault: Vault,
    registry: IntegrationRegistry,
    provider_id: str,
    integration_id: str,
    *,
    write: bool,
    base_url: str,
) -> Started:
    get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    row, connector = oauth_integration(session, ctx, registry, integration_id)
    client_id = vault.open(row.tenant_id, row.id, {"client_id": row.credentials["client_id"]})
    state, verifier = generate_token(43), generate_token(64)  # RFC 7636: 43 to 128 chars
    scopes = connector.scopes(write=write)
    callback = redirect_uri(base_url)
    request_id = new_id("cor")
    session.add(
        CalendarOAuthRequest(
            id=request_id,
            tenant_id=ctx.tenant_id,
            integration_id=row.id,
            provider_id=provider_id,
            state_hash=state_hash(state),
            code_verifier=vault.encrypt_field(
                session, ctx.tenant_id, request_id, VERIFIER_FIELD, verifier
            ),
            scopes=scopes,
            redirect_uri=callback,
            created_by=ctx.actor_id,
            created_at=ctx.now,
            expires_at=ctx.now + REQUEST_TTL,
        )
    )
    url = prepare_grant_uri(
        connector.authorize_endpoint(row.settings),
        client_id["client_id"].reveal(),
        "code",
        callback,
        scope=scopes,
        state=state,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
        **connector.authorize_params,
    )
    session.flush()
    record(
        session,
        ctx,
        "calendar_account.authorize_start",
        "provider",
        provider_id,
        diff={"integration_id": row.id, "scopes": scopes},
    )
    return Started(request_id, str(url), scopes, callback, ctx.now + REQUEST_TTL)


def token_request(
    conn: ConnectorContext, connector: OAuthCalendarConnector, form: dict[str, str]
) -> TokenSet:
    """POST the token endpoint (never retried after it may have been processed: a rotated
    refresh token must not be spent twice). OAuth errors become ``OAuthError``."""
    body = {
        **form,
        "client_id": conn.secret("client_id"),
        "client_secret": conn.secret("client_secret"),
    }
    with conn.client() as client:
        response = client.post(
            connector.token_endpoint(conn.settings), operation="oauth.token", data=body
        )
    payload = _json(response)
    if response.status_code != 200:
        code = payload.get("error")
        code = code if isinstance(code, str) and len(code) <= 64 else None
        error = ReauthorizationRequired if code == "invalid_grant" else OAuthError
        raise error(
            f"{connector.key} oauth.token: the provider refused ({code or 'no error code'}, "
            f"HTTP {response.status_code})",
            integration=conn.integration_id,
            oauth_error=code,
            status_code=response.status_code,
        )
    access, expires = payload.get("access_token"), payload.get("expires_in", 3600)
    if not isinstance(access, str) or not access:
        raise OAuthError(
            f"{connector.key} oauth.token: an answer without an access token",
            integration=conn.integration_id,
            oauth_error=None,
            status_code=response.status_code,
        )
    refresh = payload.get("refresh_token")
    scope = payload.get("scope")
    return TokenSet(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=int(expires)
        if isinstance(expires, int | str) and str(expires).isdigit()
        else 3600,
        scopes=scope.split() if isinstance(scope, str) else None,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


@dataclass(frozen=True)
class Finished:
    ok: bool
    message: str
    account_id: str | None = None
    provider_id: str | None = None


def finish_authorization(
    db: Database,
    vault: Vault,
    registry: IntegrationRegistry,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    now: datetime,
) -> Finished:
    """The callback's work; ``OAuthStateError`` for a state that is unknown, used or old."""
    if not state or len(state) > 512:
        raise OAuthStateError("This authorization link is not valid.")
    with db.write() as session:
        request = session.scalar(
            sa.select(CalendarOAuthRequest)
            .where(CalendarOAuthRequest.state_hash == state_hash(state))
            .with_for_update()
        )
        if request is None or request.used_at is not None or request.expires_at <= now:
            raise OAuthStateError("This authorization link is not valid any more.")
        request.used_at = now  # single use, committed before the code is spent
        integration = session.get(Integration, request.integration_id)
        if integration is None or not integration.enabled:
            raise OAuthStateError("The calendar integration is gone or disabled.")
        connector = connector_for(integration, registry)
        assert isinstance(connector, OAuthCalendarConnector)
        verifier = vault.decrypt_field(
            request.tenant_id, request.id, VERIFIER_FIELD, request.code_verifier
        )
        conn = context(db, vault, integration)
        if error or not code:
            record_system(
                session,
                request.tenant_id,
                "calendar_account.authorize",
                "provider",
                request.provider_id,
                now=now,
                outcome="failure",
                diff={"integration_id": integration.id, "error": (error or "no code")[:64]},
            )
            return Finished(False, "The calendar was not connected: access was not granted.")
    try:
        tokens = token_request(
            conn,
            connector,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": request.redirect_uri,
                "code_verifier": verifier.reveal(),
            },
        )
    except ExternalServiceError as exc:
        log.warning("calendar authorization failed", extra={"fields": {"error": exc.detail}})
        return Finished(False, "The calendar provider refused the authorization; start again.")
    granted = tokens.scopes if tokens.scopes is not None else list(request.scopes)
    missing = [s for s in request.scopes if s != "offline_access" and s not in granted]
    if missing or tokens.refresh_token is None:
        what = "some permissions were not granted" if missing else "no refresh token was issued"
        return Finished(False, f"The calendar was not connected: {what}. Start again.")
    with db.write() as session:
        account = _store(session, vault, request, connector.key, tokens, granted, now)
        return Finished(True, "The calendar is connected.", account.id, account.provider_id)


def _store(
    session: Session,
    vault: Vault,
    request: CalendarOAuthRequest,
    connector_key: str,
    tokens: TokenSet,
    scopes: list[str],
    now: datetime,
) -> CalendarAccount:
    account = session.scalar(
        sa.select(CalendarAccount)
        .where(
            CalendarAccount.integration_id == request.integration_id,
            CalendarAccount.provider_id == request.provider_id,
        )
        .with_for_update()
    )
    if account is None:
        account = CalendarAccount(
            id=new_id("cac"),
            tenant_id=request.tenant_id,
            integration_id=request.integration_id,
            provider_id=request.provider_id,
            connector=connector_key,
            token_version=0,
            created_at=now,
        )
        session.add(account)
    secret = {"access_token": Secret(tokens.access_token)}
    if tokens.refresh_token is not None:
        secret["refresh_token"] = Secret(tokens.refresh_token)
    account.tokens = vault.seal(session, request.tenant_id, account.id, secret)
    account.status, account.scopes = "active", sorted(scopes)
    account.access_expires_at = now + timedelta(seconds=tokens.expires_in)
    account.token_version = (account.token_version or 0) + 1
    account.refresh_lease_until = account.refresh_lease_owner = None
    account.last_error, account.last_refresh_at = None, now
    account.authorized_by, account.authorized_at, account.updated_at = (
        request.created_by,
        now,
        now,
    )
    session.flush()
    session.execute(
        sa.update(CalendarConnection)
        .where(
            CalendarConnection.account_id == account.id, CalendarConnection.status == "needs_reauth"
        )
        .values(status="active", updated_at=now)
    )
    alerts.resolve(session, tenant_id=account.tenant_id, subject_id=account.id, now=now)
    record_system(
        session,
        account.tenant_id,
        "calendar_account.authorize",
        "calendar_account",
        account.id,
        now=now,
        diff={
            "provider_id": account.provider_id,
            "integration_id": account.integration_id,
            "scopes": account.scopes,
            "tokens": ["access_token", "refresh_token"],
        },
    )
    return account
