"""The inbound webhook inbox: ``POST /webhooks/{integration_id}``.

The order is fixed: size limit (middleware) → find the integration → verify the
signature → dedupe on the provider's event id → persist → enqueue processing →
answer. All of it in one short write transaction, which concurrent requests
share (group commit, see ``receive_batch`` and api/webhook_inbox.py); no outside
call before the answer; handlers run later in a job. A failed verification is
counted, audited, rate-limited per source IP, answered 401 with a generic body,
and never stored as an event.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.core.errors import NotFoundError, WebhookVerificationError
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.integrations.service import webhook_secrets
from clinicbridge.jobs.queue import NewJob, enqueue_many
from clinicbridge.vault.service import Vault
from clinicbridge.webhooks.models import WebhookEvent
from clinicbridge.webhooks.verifiers.base import (
    InboundEvent,
    Verified,
    Verifier,
    WebhookRequest,
)

PROCESS_KIND = "webhooks.process"
# Stored headers leave out credentials some senders put in headers.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-vapi-secret"})


class TooManyFailures(Exception):
    """This source IP failed verification too often; answered 429 without verifying."""


class FailureLimiter:
    """Per source IP: at most ``limit`` failed verifications per ``window`` seconds.

    In-process and bounded (oldest IPs forgotten first); it protects the verifier
    and the audit log from a flood of forged requests.
    """

    def __init__(self, limit: int = 20, window: float = 60.0, max_ips: int = 10_000) -> None:
        self.limit, self.window, self.max_ips = limit, window, max_ips
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, ip: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(ip, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def check(self, ip: str) -> None:
        with self._lock:
            if ip in self._failures and len(self._recent(ip, time.monotonic())) >= self.limit:
                raise TooManyFailures

    def failed(self, ip: str) -> None:
        with self._lock:
            self._recent(ip, time.monotonic()).append(time.monotonic())
            self._failures.move_to_end(ip)
            while len(self._failures) > self.max_ips:
                self._failures.popitem(last=False)


@dataclass(frozen=True)
class Arrival:
    """A request as it arrived, before anything about it is checked."""

    integration_id: str
    request: WebhookRequest
    source_ip: str
    received_at: datetime


@dataclass(frozen=True)
class Received:
    connector: str
    accepted: int  # new events stored
    duplicates: int
    response: dict[str, Any] | None  # what the provider expects back, if anything special


@dataclass(frozen=True)
class _Endpoint:
    """An enabled integration that takes webhooks, with every secret valid now."""

    integration_id: str
    tenant_id: str
    connector: str
    verifier: Verifier
    secrets: list[str]


@dataclass(frozen=True)
class _Delivery:
    """A verified request: whose it is, its events, what to keep of it."""

    endpoint: _Endpoint
    verified: Verified
    headers: dict[str, str]  # without credentials (see _SECRET_HEADERS)
    body: bytes
    received_at: datetime


_INTEGRATIONS = cast(sa.Table, Integration.__table__)
_EVENTS = cast(sa.Table, WebhookEvent.__table__)
# Core, and only the columns needed: about half the cost of loading ORM objects.
_ENDPOINTS = sa.select(
    _INTEGRATIONS.c.id,
    _INTEGRATIONS.c.tenant_id,
    _INTEGRATIONS.c.connector,
    _INTEGRATIONS.c.enabled,
    _INTEGRATIONS.c.credentials,
    _INTEGRATIONS.c.previous_webhook_secret,
    _INTEGRATIONS.c.previous_secret_expires_at,
).where(_INTEGRATIONS.c.id.in_(sa.bindparam("ids", expanding=True)))


def _insert_events(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(_EVENTS)
        .on_conflict_do_nothing(index_elements=["integration_id", "provider_event_id"])
        .returning(_EVENTS.c.id)
    )


def receive(
    db: Database,
    vault: Vault,
    registry: IntegrationRegistry,
    limiter: FailureLimiter,
    integration_id: str,
    request: WebhookRequest,
    *,
    source_ip: str,
    now: datetime,
) -> Received:
    """The inbox for one request, in a transaction of its own.

    The HTTP route hands requests to a group committer instead, which runs
    ``receive_batch`` for all the requests waiting at that moment.
    """
    with db.write() as session:
        [outcome] = receive_batch(
            session,
            [Arrival(integration_id, request, source_ip, now)],
            vault=vault,
            registry=registry,
            limiter=limiter,
        )
    if isinstance(outcome, WebhookVerificationError):
        limiter.failed(source_ip)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def receive_batch(
    session: Session,
    arrivals: Sequence[Arrival],
    *,
    vault: Vault,
    registry: IntegrationRegistry,
    limiter: FailureLimiter | None = None,
) -> list[Received | Exception]:
    """The inbox for many requests, in the caller's write transaction.

    One outcome per request, in order: its ``Received``, or the exception that
    answers it: NotFoundError, TooManyFailures (checked against ``limiter``), or
    WebhookVerificationError (audited here; the caller counts it against the
    source IP once the transaction has committed). One request's outcome does not
    depend on the others'. One query reads every integration; one statement
    inserts every verified event, deduplicated on (integration, provider event
    id) by the unique constraint, a duplicate within the batch included; one
    enqueues a processing job per event actually inserted. Nothing survives a
    rollback, so a failed batch can be received again, whole or in parts.
    """
    found = session.connection().execute(
        _ENDPOINTS, {"ids": sorted({a.integration_id for a in arrivals})}
    )
    rows = {row.id: row for row in found}
    endpoints: dict[str, _Endpoint | None] = {}
    outcomes: list[Received | Exception | _Delivery] = []
    for arrival in arrivals:
        # Secrets once per integration and batch, valid at its first arrival (the
        # others arrived within milliseconds of it).
        if arrival.integration_id not in endpoints:
            endpoints[arrival.integration_id] = _endpoint(
                rows.get(arrival.integration_id), vault, registry, arrival.received_at
            )
        try:
            outcomes.append(_verify(session, endpoints[arrival.integration_id], arrival, limiter))
        except (NotFoundError, TooManyFailures, WebhookVerificationError) as exc:
            outcomes.append(exc)
    stored = iter(_store(session, [o for o in outcomes if isinstance(o, _Delivery)]))
    return [next(stored) if isinstance(o, _Delivery) else o for o in outcomes]


def _endpoint(
    row: sa.Row[*tuple[Any, ...]] | None,
    vault: Vault,
    registry: IntegrationRegistry,
    now: datetime,
) -> _Endpoint | None:
    connector = registry.connector(row.connector) if row is not None else None
    if row is None or not row.enabled or connector is None or connector.verifier is None:
        return None
    fields = Integration(  # transient: just what webhook_secrets reads
        id=row.id,
        tenant_id=row.tenant_id,
        credentials=row.credentials,
        previous_webhook_secret=row.previous_webhook_secret,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )
    secrets = webhook_secrets(vault, fields, connector, now)
    return _Endpoint(row.id, row.tenant_id, row.connector, connector.verifier, secrets)


def _verify(
    session: Session,
    endpoint: _Endpoint | None,
    arrival: Arrival,
    limiter: FailureLimiter | None,
) -> _Delivery:
    if endpoint is None:
        raise NotFoundError("No such webhook endpoint.")
    if limiter is not None:
        limiter.check(arrival.source_ip)
    request, now = arrival.request, arrival.received_at
    try:
        verified = endpoint.verifier(request, endpoint.secrets, now)
    except WebhookVerificationError as exc:
        exc.connector = endpoint.connector  # for the metrics label
        record_system(
            session,
            endpoint.tenant_id,
            "webhook.verification_failed",
            "integration",
            endpoint.integration_id,
            now=now,
            actor_id=f"ip:{arrival.source_ip}"[:64],
            outcome="failure",
            diff={"reason": exc.detail, "connector": endpoint.connector},
        )
        raise
    headers = {k: v for k, v in request.headers.items() if k not in _SECRET_HEADERS}
    return _Delivery(endpoint, verified, headers, request.body, now)


def _store(session: Session, deliveries: Sequence[_Delivery]) -> list[Received]:
    rows = [[_event_row(d, e) for e in d.verified.events] for d in deliveries]
    flat = [r for per_delivery in rows for r in per_delivery]
    inserted: set[str] = set()
    if flat:
        dialect = session.get_bind().dialect.name
        inserted = set(session.connection().execute(_insert_events(dialect), flat).scalars())
        enqueue_many(
            session,
            (
                NewJob(
                    PROCESS_KIND,
                    {"event_id": r["id"]},
                    tenant_id=r["tenant_id"],
                    run_at=r["received_at"],
                    dedupe_key=f"whe:{r['id']}",
                )
                for r in flat
                if r["id"] in inserted
            ),
            now=max(d.received_at for d in deliveries),
        )
    out = []
    for d, per_delivery in zip(deliveries, rows, strict=True):
        accepted = sum(1 for r in per_delivery if r["id"] in inserted)
        duplicates = len(per_delivery) - accepted
        out.append(Received(d.endpoint.connector, accepted, duplicates, d.verified.response))
    return out


def _event_row(delivery: _Delivery, event: InboundEvent) -> dict[str, Any]:
    return {
        "id": new_id("whe"),
        "tenant_id": delivery.endpoint.tenant_id,
        "integration_id": delivery.endpoint.integration_id,
        "provider_event_id": event.provider_event_id[:255],
        "type": event.type[:128],
        "occurred_at": event.occurred_at,
        "received_at": delivery.received_at,
        "status": "received",
        "headers": delivery.headers,
        "raw_body": delivery.body,
        "payload": event.payload,
        "job_id": None,
        "attempts": 0,
        "last_error": None,
        "processed_at": None,
    }
