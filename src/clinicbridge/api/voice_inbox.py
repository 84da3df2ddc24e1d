"""``POST /voice/vapi/{integration_id}``: the clinic's Vapi assistant calls its tools here.

The clinic is the integration's owner, never anything in the message. Order:
find the enabled Vapi integration (404 otherwise) → check its secret (401; 404
when the request carries another clinic's voice secret: to that clinic this is
another clinic's resource; failures are rate-limited per source IP) →
read the message (422 problem+json when it is not a Vapi server message) → run
the tool calls in one write transaction (again after a fresh calendar check that they
ask for) → ``{"results": [...]}``. Other server messages (status updates, reports)
are acknowledged and ignored.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from clinicbridge.api.deps import clock_of, db_of
from clinicbridge.api.problems import http_problem, problem_response
from clinicbridge.audit import record_system
from clinicbridge.core.errors import NotFoundError, Problem, WebhookVerificationError
from clinicbridge.db.engine import Database
from clinicbridge.integrations.registry import IntegrationRegistry, integrations
from clinicbridge.settings import Settings
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.voice import dates, service, vapi
from clinicbridge.webhooks.inbox import FailureLimiter, TooManyFailures
from clinicbridge.webhooks.verifiers.base import WebhookRequest

router = APIRouter(tags=["public"])
_REJECTED = Problem(
    401, "unauthenticated", "Authentication required", "The request could not be authenticated."
)


def _limiter(request: Request) -> FailureLimiter:
    state = request.app.state
    if not hasattr(state, "voice_limiter"):
        state.voice_limiter = FailureLimiter()
    limiter: FailureLimiter = state.voice_limiter
    return limiter


@router.post("/voice/vapi/{integration_id}", summary="Vapi tool calls for a clinic")
async def vapi_server(integration_id: str, request: Request) -> Response:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    url = f"{request.app.state.settings.public_base_url}{request.url.path}"
    source_ip = request.client.host if request.client else "unknown"
    request_id = getattr(request.state, "request_id", None)
    limiter = _limiter(request)
    try:
        limiter.check(source_ip)
    except TooManyFailures:
        return problem_response(http_problem(429), request_id, {"Retry-After": "60"})
    registry: IntegrationRegistry = getattr(request.app.state, "integrations", integrations)
    db = db_of(request)
    work = partial(
        _handle,
        db,
        request.app.state.settings,
        shared_vault(db, request.app.state.settings.master_key_file),
        registry,
        integration_id,
        WebhookRequest("POST", url, headers, body),
        clock_of(request).now(),
        request_id,
        source_ip,
    )
    try:
        answer = await anyio.to_thread.run_sync(work)
    except WebhookVerificationError:
        limiter.failed(source_ip)
        return problem_response(_REJECTED, request_id, {"WWW-Authenticate": "Bearer"})
    return JSONResponse(answer)


def _handle(
    db: Database,
    settings: Settings,
    vault: Vault,
    registry: IntegrationRegistry,
    integration_id: str,
    webhook: WebhookRequest,
    now: Any,
    request_id: str | None,
    source_ip: str,
) -> dict[str, Any]:
    with db.read() as session:
        endpoint = service.find_endpoint(session, vault, registry, integration_id, now)
    try:
        service.authenticate(endpoint, webhook, now)
    except WebhookVerificationError as exc:
        with db.write() as session:
            elsewhere = service.belongs_elsewhere(session, vault, registry, endpoint, webhook, now)
            record_system(
                session,
                endpoint.tenant_id,
                "voice.authentication_failed",
                "integration",
                endpoint.integration_id,
                now=now,
                actor_id=f"ip:{source_ip}"[:64],
                outcome="failure",
                diff={"reason": "another clinic's secret" if elsewhere else exc.detail},
            )
        if elsewhere:
            raise NotFoundError("No such voice endpoint.") from None
        raise
    message = vapi.parse(webhook.body)  # InvalidInputError: 422 problem+json
    if message.type != vapi.TOOL_CALLS:
        return {}
    dates.warm()  # once per process, outside the write transaction
    ctx = service.voice_ctx(endpoint, now, request_id, source_ip)
    results = service.answer_tool_calls(db, settings, ctx, endpoint, message)
    return vapi.answer(results)
