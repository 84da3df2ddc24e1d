"""The voice receptionist's server side: who is calling us, the calls, the tool-call log.

A request to ``/voice/vapi/{integration_id}`` belongs to the clinic that owns the
integration, never to anything in the message. Its secret is the integration's
own ``webhook_secret`` (the current one, and the previous one during rotation).
Each tool call runs in a savepoint of the request's write transaction: a failed
tool leaves nothing half-written, and its log row is written either way. A booking or
a move whose provider has outside calendars needs the fresh calendar check first: the
transaction is rolled back, the check runs with none open, and the tool calls run again
with its verdict (``answer_tool_calls``; at most ``MAX_PRECHECKS`` checks a request).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import (
    ClinicBridgeError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    WebhookVerificationError,
)
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.integrations.service import webhook_secrets
from clinicbridge.patients.normalize import phone_e164, region_of
from clinicbridge.settings import Settings
from clinicbridge.vault.service import Vault
from clinicbridge.voice import dates, vapi
from clinicbridge.voice.backend import NativeBackend, PracticeBackend, PrecheckNeeded, Verdicts
from clinicbridge.voice.catalog import TOOLS
from clinicbridge.voice.models import VoiceCall, VoiceToolCall
from clinicbridge.voice.toolkit import Args, Outcome, ToolEnv, ToolError
from clinicbridge.webhooks.verifiers import vapi as vapi_verifier
from clinicbridge.webhooks.verifiers.base import WebhookRequest, constant_time_equal

log = logging.getLogger(__name__)

CONNECTOR = "vapi"
ACTOR_ROLE = "voice"
# What a voice assistant may do on a clinic's behalf: no refunds, no configuration.
# Billing only through its tools: read a verified caller's balance, send a payment link.
PERMISSIONS = frozenset(
    {
        "billing:read",
        "billing:write",
        "patients:read",
        "patients:write",
        "patients:notes",
        "schedule:read",
        "bookings:read",
        "bookings:write",
    }
)
INTERNAL_ERROR = (
    "I am sorry, something went wrong on our side. Please try again in a moment, "
    "or I can ask the clinic to call you back."
)
METRICS_DEFAULT_DAYS = 7
METRICS_MAX_DAYS = 92


# --- who is calling -------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceEndpoint:
    integration_id: str
    tenant_id: str
    timezone: str
    secrets: list[str]


def find_endpoint(
    session: Session,
    vault: Vault,
    registry: IntegrationRegistry,
    integration_id: str,
    now: datetime,
) -> VoiceEndpoint:
    """The enabled Vapi integration at this URL, or NotFoundError (404) — the same
    answer for an unknown id, a disabled integration and another connector's."""
    from clinicbridge.core.models import Tenant

    row = session.get(Integration, integration_id) if len(integration_id) <= 32 else None
    connector = registry.connector(CONNECTOR)
    if row is None or row.connector != CONNECTOR or not row.enabled or connector is None:
        raise NotFoundError("No such voice endpoint.")
    tz = session.scalar(sa.select(Tenant.timezone).where(Tenant.id == row.tenant_id)) or "UTC"
    return VoiceEndpoint(row.id, row.tenant_id, tz, webhook_secrets(vault, row, connector, now))


def authenticate(endpoint: VoiceEndpoint, request: WebhookRequest, now: datetime) -> None:
    """``X-Vapi-Secret: <secret>`` or ``Authorization: Bearer <secret>`` (or Vapi's HMAC
    signature); WebhookVerificationError (401) otherwise. Constant-time compares."""
    keys = [s for s in endpoint.secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    tokens = presented_tokens(request)
    matched = [constant_time_equal(key, token) for key in keys for token in tokens]
    if any(matched):
        return
    if any(request.headers.get(sig) for sig, _ in vapi_verifier.SIGNATURE_HEADERS):
        vapi_verifier.verify(request, keys, now)  # raises unless the HMAC matches
        return
    raise WebhookVerificationError("no matching secret" if tokens else "missing secret")


def presented_tokens(request: WebhookRequest) -> list[str]:
    headers = request.headers
    tokens = [headers.get(vapi_verifier.SECRET_HEADER, "").strip()]
    scheme, _, credential = headers.get(vapi_verifier.AUTHORIZATION, "").strip().partition(" ")
    if scheme.lower() == "bearer":
        tokens.append(credential.strip())
    return [t for t in tokens if t]


def belongs_elsewhere(
    session: Session,
    vault: Vault,
    registry: IntegrationRegistry,
    endpoint: VoiceEndpoint,
    request: WebhookRequest,
    now: datetime,
) -> bool:
    """Whether a rejected request carries another clinic's valid voice secret: then this
    integration is another clinic's resource to it, answered 404 like anywhere else.
    Runs only after a failed check (rate-limited per IP), never on the hot path."""
    tokens = presented_tokens(request)
    connector = registry.connector(CONNECTOR)
    if not tokens or connector is None:
        return False
    others = session.scalars(
        sa.select(Integration).where(
            Integration.connector == CONNECTOR,
            Integration.enabled.is_(True),
            Integration.tenant_id != endpoint.tenant_id,
        )
    )
    found = False
    for row in others:
        for key in webhook_secrets(vault, row, connector, now):
            found = any([found, *(constant_time_equal(key, t) for t in tokens)])
    return found


def voice_ctx(
    endpoint: VoiceEndpoint, now: datetime, request_id: str | None, ip: str | None
) -> Ctx:
    return Ctx(
        tenant_id=endpoint.tenant_id,
        actor_type="integration",
        actor_id=endpoint.integration_id,
        role=ACTOR_ROLE,
        permissions=PERMISSIONS,
        now=now,
        request_id=request_id,
        ip=ip,
    )


# --- the calls -------------------------------------------------------------------------


def _insert_call(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(cast(sa.Table, VoiceCall.__table__)).on_conflict_do_nothing(
        index_elements=["integration_id", "call_id"]
    )


def call_state(
    session: Session, endpoint: VoiceEndpoint, message: vapi.ServerMessage, now: datetime
) -> VoiceCall:
    """The call's row, created on its first tool call (concurrent first calls included)."""
    number = None
    if message.caller_number:
        try:
            number = phone_e164(message.caller_number, region_of(endpoint.timezone))
        except ValueError:
            number = None  # withheld or not a phone number: no verification by number
    values = {
        "id": new_id("vcl"),
        "tenant_id": endpoint.tenant_id,
        "integration_id": endpoint.integration_id,
        "call_id": message.call_id,
        "caller_number": number,
        "verified_patient_id": None,
        "verified_via": None,
        "created_at": now,
        "updated_at": now,
    }
    session.execute(_insert_call(session.get_bind().dialect.name), values)
    stmt = sa.select(VoiceCall).where(
        VoiceCall.integration_id == endpoint.integration_id, VoiceCall.call_id == message.call_id
    )
    return session.scalars(stmt).one()


MAX_PRECHECKS = 4


class _TooManyChecks(ConflictError):
    type_slug = "calendar-busy"
    title = "Slot taken"


def answer_tool_calls(
    db: Database, settings: Settings, ctx: Ctx, endpoint: VoiceEndpoint, message: vapi.ServerMessage
) -> list[tuple[str, str]]:
    """``handle_tool_calls`` in one write transaction, the fresh calendar checks it asks
    for run in between with no transaction open."""
    from clinicbridge.scheduling import prechecks  # with the booking services: where used

    verdicts: Verdicts = {}
    while True:
        try:
            with db.write() as session:
                return handle_tool_calls(session, ctx, endpoint, message, verdicts=verdicts)
        except PrecheckNeeded as need:
            verdict: ClinicBridgeError | None = None
            if len(verdicts) >= MAX_PRECHECKS:
                verdict = _TooManyChecks("Too many times to check in one request.")
            else:
                try:
                    prechecks.run(
                        db, settings, ctx.tenant_id, need.service_id, need.provider_id,
                        need.start, booking_id=need.booking_id, now=ctx.now,
                    )  # fmt: skip
                except ClinicBridgeError as exc:
                    verdict = exc
            verdicts[need.key] = verdict


def handle_tool_calls(
    session: Session,
    ctx: Ctx,
    endpoint: VoiceEndpoint,
    message: vapi.ServerMessage,
    *,
    backend: PracticeBackend | None = None,
    verdicts: Verdicts | None = None,
) -> list[tuple[str, str]]:
    """Run each tool call in order; ``(tool call id, result)`` for Vapi's answer.
    ``PrecheckNeeded`` escapes: the caller rolls back, checks, and calls again."""
    call = call_state(session, endpoint, message, ctx.now)
    practice = backend or NativeBackend(session, ctx, verdicts)
    out = []
    for tool_call in message.tool_calls:
        began = time.perf_counter()
        env = ToolEnv(practice, call, ctx.now)
        outcome = _run(session, env, tool_call)
        _apply_verification(env, ctx.now)
        latency_ms = (time.perf_counter() - began) * 1000
        session.add(
            VoiceToolCall(
                id=new_id("vtc"),
                tenant_id=ctx.tenant_id,
                integration_id=endpoint.integration_id,
                call_id=message.call_id,
                tool_call_id=tool_call.id,
                tool=tool_call.name[:64] or "?",
                patient_id=env.patient_id,
                success=outcome.success,
                error_code=outcome.error_code,
                latency_ms=round(latency_ms, 3),
                phi_accessed=env.phi,
                created_at=ctx.now,
            )
        )
        out.append((tool_call.id, result_text(outcome)))
    session.flush()
    return out


def result_text(outcome: Outcome) -> str:
    """Vapi wants the result as one line of text: the sentence plus fields, as JSON."""
    from json import dumps

    body: dict[str, Any] = {"message": outcome.message, "success": outcome.success}
    if outcome.error_code:
        body["error"] = outcome.error_code
    body.update(outcome.data)
    return dumps(body, separators=(",", ":"), default=str)


def _run(session: Session, env: ToolEnv, tool_call: vapi.ToolCall) -> Outcome:
    if tool_call.defect is not None:
        return Outcome(tool_call.defect, {}, False, "malformed_tool_call")
    spec = TOOLS.get(tool_call.name)
    if spec is None:
        return Outcome("I am sorry, I cannot do that here.", {}, False, "unknown_tool")
    savepoint = session.begin_nested()
    try:
        outcome = spec.run(env, Args(tool_call.arguments))
    except PrecheckNeeded:
        savepoint.rollback()
        raise
    except Exception as exc:
        outcome = _failure(exc, tool_call.name)
    if outcome.success:
        savepoint.commit()
        return outcome
    # A refused or failed action leaves nothing behind, its audit events included;
    # the log keeps the patient only if the record existed before.
    savepoint.rollback()
    if env.verified is not None and env.verified[1] == "created":
        env.verified = None  # the record it created is gone
    if not env.phi:
        env.patient_id = None
    env.phi = False
    return outcome


def _apply_verification(env: ToolEnv, now: datetime) -> None:
    """Outside the tool's savepoint: a match holds for the rest of the call."""
    if env.verified is None:
        return
    patient_id, via = env.verified
    if env.call.verified_patient_id == patient_id:
        return
    env.call.verified_patient_id, env.call.verified_via = patient_id, via
    env.call.updated_at = now
    env.patient_id = patient_id
    if via != "created":
        env.backend.record_verification(patient_id)  # the caller learns the record exists
        env.phi = True


def _failure(exc: Exception, tool: str) -> Outcome:
    if isinstance(exc, ToolError):
        return Outcome(exc.message, dict(exc.data), False, exc.code)
    if isinstance(exc, dates.DateError):
        return Outcome(str(exc), {}, False, "invalid_date")
    if isinstance(exc, InvalidInputError):
        return Outcome(_spoken_invalid(exc), {}, False, "invalid_input")
    if isinstance(exc, NotFoundError):
        return Outcome("I am sorry, I could not find that.", {}, False, "not_found")
    if isinstance(exc, PermissionDeniedError):
        return Outcome(
            "I am sorry, I cannot do that by phone. The clinic team can help you.",
            {},
            False,
            "not_allowed",
        )
    if isinstance(exc, ConflictError):
        return Outcome(_sentence(exc.detail), {}, False, "conflict")
    # A bug: the caller hears an apology, the log gets the type only (messages may hold PHI).
    log.error("voice tool %s failed: %s", tool, type(exc).__name__)
    return Outcome(INTERNAL_ERROR, {}, False, "internal")


def _spoken_invalid(exc: InvalidInputError) -> str:
    parts = []
    for error in exc.errors[:2]:
        name = error.field.rsplit(".", 1)[-1].replace("_", " ")
        parts.append(f"the {name} {error.message}")
    text = "; ".join(parts) or "some details were not valid"
    return f"I am sorry, {text}. Could you tell me again?"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "?", "!")) else text + "."


# --- the log and its metrics --------------------------------------------------------------


def list_tool_calls(
    session: Session,
    ctx: Ctx,
    *,
    call_id: str | None = None,
    tool: str | None = None,
    patient_id: str | None = None,
    success: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    starting_after: str | None,
) -> Page[VoiceToolCall]:
    stmt = scoped_select(VoiceToolCall, ctx.tenant_id)
    filters: Mapping[Any, Any] = {
        VoiceToolCall.call_id: call_id,
        VoiceToolCall.tool: tool,
        VoiceToolCall.patient_id: patient_id,
        VoiceToolCall.success: success,
    }
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(VoiceToolCall.created_at >= since)
    if until is not None:
        stmt = stmt.where(VoiceToolCall.created_at < until)
    return paginate(session, stmt, VoiceToolCall.id, limit, starting_after)


def metrics_window(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    end = until or now + timedelta(seconds=1)  # "up to now", now included
    start = since or end - timedelta(days=METRICS_DEFAULT_DAYS)
    if start >= end:
        raise InvalidInputError.one("from", "must be before 'to'")
    if end - start > timedelta(days=METRICS_MAX_DAYS):
        raise InvalidInputError.one("from", f"the range may span at most {METRICS_MAX_DAYS} days")
    return start, end


def metrics(
    session: Session, ctx: Ctx, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Success and error rates, p95 latency, per tool, and PHI accesses per clinic day."""
    start, end = metrics_window(since, until, ctx.now)
    from clinicbridge.core.models import Tenant

    tz = ZoneInfo(
        session.scalar(sa.select(Tenant.timezone).where(Tenant.id == ctx.tenant_id)) or "UTC"
    )
    rows = session.execute(
        sa.select(
            VoiceToolCall.tool,
            VoiceToolCall.success,
            VoiceToolCall.error_code,
            VoiceToolCall.latency_ms,
            VoiceToolCall.phi_accessed,
            VoiceToolCall.created_at,
            VoiceToolCall.call_id,
        ).where(
            VoiceToolCall.tenant_id == ctx.tenant_id,
            VoiceToolCall.created_at >= start,
            VoiceToolCall.created_at < end,
        )
    ).all()
    per_tool: dict[str, list[Any]] = {}
    phi_days: Counter[str] = Counter()
    for row in rows:
        per_tool.setdefault(row.tool, []).append(row)
        if row.phi_accessed:
            phi_days[row.created_at.astimezone(tz).date().isoformat()] += 1
    return {
        "from": start,
        "to": end,
        **_summary(rows),
        "calls": len({row.call_id for row in rows}),
        "by_tool": {name: _summary(items) for name, items in sorted(per_tool.items())},
        "phi_accesses_per_day": [
            {"date": day, "count": count} for day, count in sorted(phi_days.items())
        ],
        "phi_accesses": sum(phi_days.values()),
    }


def _summary(rows: Sequence[Any]) -> dict[str, Any]:
    total = len(rows)
    ok = sum(1 for r in rows if r.success)
    internal = sum(1 for r in rows if r.error_code == "internal")
    latencies = sorted(r.latency_ms for r in rows)
    return {
        "tool_calls": total,
        "succeeded": ok,
        "success_rate": round(ok / total, 4) if total else None,
        "error_rate": round((total - ok) / total, 4) if total else None,
        "internal_error_rate": round(internal / total, 4) if total else None,
        "p95_latency_ms": _percentile(latencies, 0.95),
    }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
