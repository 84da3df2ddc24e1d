"""``POST /webhooks/{integration_id}``: where providers deliver events (see webhooks.inbox).

Requests go to the app's group committer, which runs the whole inbox (find the
integration, verify, dedupe, persist, enqueue) for every request waiting at
that moment in one write transaction, and answers each only after the commit.
The event loop only reads the request and writes the answer; waiting for the
commit holds no thread.
"""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from clinicbridge.api.deps import clock_of, db_of
from clinicbridge.api.problems import http_problem, problem_response
from clinicbridge.core.errors import Problem, WebhookVerificationError
from clinicbridge.core.metrics import Metrics
from clinicbridge.integrations.registry import integrations
from clinicbridge.vault.shared import shared_vault
from clinicbridge.webhooks.group_commit import GroupCommitter
from clinicbridge.webhooks.inbox import (
    Arrival,
    FailureLimiter,
    Received,
    TooManyFailures,
    receive_batch,
)
from clinicbridge.webhooks.verifiers.base import WebhookRequest

router = APIRouter(tags=["webhooks"])
_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_REJECTED = Problem(
    401, "webhook-verification", "Webhook verification failed", "The request could not be verified."
)
# Far above a healthy commit (milliseconds), below a provider's own timeout; past
# it the request is answered 500 and the provider retries (stored once anyway).
COMMIT_TIMEOUT_SECONDS = 30.0
# How long the committer may hold a batch open for more requests: under load,
# batches grow and each request's share of a transaction shrinks.
LINGER_SECONDS = 0.002


def _limiter(request: Request) -> FailureLimiter:
    state = request.app.state
    if not hasattr(state, "webhook_limiter"):
        state.webhook_limiter = FailureLimiter()
    limiter: FailureLimiter = state.webhook_limiter
    return limiter


def _committer(request: Request) -> GroupCommitter[Arrival, Received]:
    state = request.app.state
    if not hasattr(state, "webhook_committer"):
        db = db_of(request)
        write = partial(
            receive_batch,
            vault=shared_vault(db, state.settings.master_key_file),
            registry=getattr(state, "integrations", integrations),
            limiter=_limiter(request),
        )
        state.webhook_committer = GroupCommitter(
            db, write, name="webhook-inbox", linger_seconds=LINGER_SECONDS
        )
    committer: GroupCommitter[Arrival, Received] = state.webhook_committer
    return committer


@router.post("/webhooks/{integration_id}", summary="Receive a provider's webhook")
async def receive_webhook(integration_id: str, request: Request) -> Response:
    settings = request.app.state.settings
    metrics: Metrics = request.app.state.metrics
    body = await request.body()
    query = request.url.query
    # Providers sign the public URL they called, not the one behind our proxy.
    url = f"{settings.public_base_url}{request.url.path}" + (f"?{query}" if query else "")
    webhook = WebhookRequest("POST", url, {k.lower(): v for k, v in request.headers.items()}, body)
    request_id = getattr(request.state, "request_id", None)
    source_ip = request.client.host if request.client else "unknown"
    arrival = Arrival(integration_id, webhook, source_ip, clock_of(request).now())
    future = _committer(request).submit(arrival)
    try:
        # asyncio's own timeout: half the cost of anyio's cancel scope, on a hot path
        async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):  # cancels it if not yet begun
            result = await asyncio.wrap_future(future)
    except WebhookVerificationError as exc:
        _limiter(request).failed(source_ip)  # after the commit: counted once
        metrics.webhooks_received.labels(getattr(exc, "connector", "?"), "rejected").inc()
        return problem_response(_REJECTED, request_id)
    except TooManyFailures:
        metrics.webhooks_received.labels("?", "throttled").inc()
        return problem_response(http_problem(429), request_id, {"Retry-After": "60"})
    metrics.webhooks_received.labels(result.connector, "accepted").inc(result.accepted)
    metrics.webhooks_received.labels(result.connector, "duplicate").inc(result.duplicates)
    if result.response is not None and set(result.response) == {"text/plain"}:
        # a challenge to echo as text (Microsoft Graph's subscription validation)
        return PlainTextResponse(str(result.response["text/plain"]))
    if result.response is not None:
        return JSONResponse(result.response)
    if result.connector == "twilio":  # Twilio wants TwiML; an empty one sends no reply
        return Response(_TWIML_EMPTY, media_type="text/xml")
    return JSONResponse({"received": result.accepted, "duplicates": result.duplicates})
