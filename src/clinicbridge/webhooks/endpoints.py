"""Webhook endpoints: a clinic's own systems subscribed to ClinicBridge events.

The URL is checked (``ssrf.check_url``) before the session is first used, so DNS
lookups never run while SQLite's write lock is held. The signing secret is stored
only sealed by the vault and returned once, by ``create_endpoint``.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.secrets import Secret
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.vault.service import Vault
from clinicbridge.webhooks.alerts import resolve_alerts
from clinicbridge.webhooks.models import WebhookEndpoint
from clinicbridge.webhooks.schemas import EndpointCreate, EndpointUpdate
from clinicbridge.webhooks.signing import generate_secret
from clinicbridge.webhooks.ssrf import (
    AllowList,
    ForbiddenDestinationError,
    Resolver,
    UnresolvableHostError,
    check_url,
    system_resolver,
)

SECRET_FIELD = "secret"  # noqa: S105 - the vault field name
RESOURCE = "webhook_endpoint"


def check_endpoint_url(url: str, allow: AllowList, resolve: Resolver = system_resolver) -> None:
    """InvalidInputError naming ``url`` unless outbound deliveries may go there."""
    try:
        check_url(url, allow, resolve)
    except ForbiddenDestinationError as exc:
        raise InvalidInputError.one("url", exc.detail, "forbidden_destination") from None
    except UnresolvableHostError as exc:
        raise InvalidInputError.one("url", exc.detail, "unresolvable_host") from None


def create_endpoint(
    session: Session,
    ctx: Ctx,
    data: EndpointCreate,
    *,
    vault: Vault,
    allow: AllowList,
    resolve: Resolver = system_resolver,
) -> tuple[WebhookEndpoint, Secret]:
    """Create an endpoint; returns it and its secret (the only time it is readable)."""
    check_endpoint_url(data.url, allow, resolve)  # before the session is used: see above
    secret = data.secret or generate_secret()
    endpoint_id = new_id("whe")
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        tenant_id=ctx.tenant_id,
        url=data.url,
        description=data.description,
        event_types=_unique(data.event_types),
        secret=vault.encrypt_field(session, ctx.tenant_id, endpoint_id, SECRET_FIELD, secret),
        enabled=data.enabled,
        disabled_reason=None if data.enabled else "disabled by a user",
        failing_since=None,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(endpoint)
    session.flush()
    after = _audited(endpoint) | {SECRET_FIELD: endpoint.secret}  # masked by name
    record(session, ctx, f"{RESOURCE}.create", RESOURCE, endpoint.id, diff=diff_of({}, after))
    return endpoint, secret


def list_endpoints(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[WebhookEndpoint]:
    stmt = scoped_select(WebhookEndpoint, ctx.tenant_id)
    return paginate(session, stmt, WebhookEndpoint.id, limit, starting_after)


def get_endpoint(session: Session, ctx: Ctx, endpoint_id: str) -> WebhookEndpoint:
    return get_scoped(session, WebhookEndpoint, ctx.tenant_id, id=endpoint_id)


def update_endpoint(
    session: Session,
    ctx: Ctx,
    endpoint_id: str,
    data: EndpointUpdate,
    *,
    allow: AllowList,
    resolve: Resolver = system_resolver,
) -> WebhookEndpoint:
    """Change an endpoint. Re-enabling clears its failure state and resolves its alerts."""
    if data.url is not None:
        check_endpoint_url(data.url, allow, resolve)  # before the session is used
    endpoint = get_endpoint(session, ctx, endpoint_id)
    before = _audited(endpoint)
    if data.url is not None:
        endpoint.url = data.url
    if data.description is not None:
        endpoint.description = data.description
    if data.event_types is not None:
        endpoint.event_types = _unique(data.event_types)
    if data.enabled is True and not endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
        resolve_alerts(session, tenant_id=ctx.tenant_id, endpoint_id=endpoint.id, now=ctx.now)
    elif data.enabled is False and endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason = False, "disabled by a user"
    diff = diff_of(before, _audited(endpoint))
    if diff:
        endpoint.updated_at = ctx.now
        session.flush()
        record(session, ctx, f"{RESOURCE}.update", RESOURCE, endpoint.id, diff=diff)
    return endpoint


def delete_endpoint(session: Session, ctx: Ctx, endpoint_id: str) -> None:
    """Delete an endpoint with its deliveries (queued jobs then find nothing to send)."""
    endpoint = get_endpoint(session, ctx, endpoint_id)
    diff = diff_of(_audited(endpoint), {})
    resolve_alerts(session, tenant_id=ctx.tenant_id, endpoint_id=endpoint.id, now=ctx.now)
    session.delete(endpoint)
    session.flush()
    record(session, ctx, f"{RESOURCE}.delete", RESOURCE, endpoint_id, diff=diff)


def redacted_url(url: str) -> str:
    """The URL for audit rows: user info and query values may be credentials."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    shown = parsed.copy_with(userinfo=b"", query=None, fragment=None)
    return str(shown) + ("?**********" if parsed.query else "")


def _audited(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": redacted_url(endpoint.url),
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
    }


def _unique(patterns: list[str]) -> list[str]:
    return list(dict.fromkeys(patterns))
