"""The send job: at most once per message, even when a worker dies mid-send.

1. In a transaction: skip a message already settled; re-check the opt-out (it may
   have come between queueing and sending); mark it ``sending`` with
   ``send_started_at``. Committed before the provider is called.
2. Call the provider (no transaction held).
3. Record ``sent`` with the provider's id, or ``failed``; an error the provider
   says is temporary puts the message back to ``queued`` and the job retries.

A job that finds a message already ``sending`` is a retry after a crash between
1 and 3: the outcome is unknown. Providers that can be asked (by our own id) are
asked before any resend (``Sender.lookup``, outside any transaction): found, the
message is ``sent`` with the provider's id; not found, it is sent again. SMTP
cannot be asked, so such a message is marked ``unknown`` and never resent: a
patient may miss one e-mail, never get two.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clinicbridge.core.errors import ExternalServiceError, RateLimitedError
from clinicbridge.core.secrets import Secret
from clinicbridge.http.ratelimit import RateLimit, RateLimitExceeded, TokenBucket
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.service import open_credentials
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging import send_writes
from clinicbridge.messaging.models import FINAL_SEND_STATUSES, Message
from clinicbridge.messaging.providers import SENDERS, OutcomeUnknownError, Outgoing
from clinicbridge.messaging.service import (
    FAILURE_STATUSES,
    SEND_KIND,
    add_event,
    failed,
    opted_out,
)
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault

log = logging.getLogger("clinicbridge.messaging")
RATE_WAIT_S = 30.0  # a handler thread waits this long for its turn, then gives the job back
RATE_MARGIN = 0.85  # of the provider's rate, for arrivals bunching up on the way


def _vault(job: JobContext) -> Vault:
    if job.settings is None:
        raise RuntimeError("the send job needs the service settings (master key file)")
    return shared_vault(job.db, job.settings.master_key_file)


@dataclass(frozen=True)
class _Recheck:
    """A message left ``sending`` by an attempt cut short, whose provider can be asked."""

    out: Outgoing


def _start(session: Session, job: JobContext, message_id: str) -> Outgoing | _Recheck | None:
    """Step 1; None when there is nothing (more) to send."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.status in FINAL_SEND_STATUSES:
        return None
    now = job.now()
    if message.status == "sending":
        sender = SENDERS.get(message.provider or "")
        integration = _integration(session, message)
        if sender is not None and sender.lookup is not None and integration is not None:
            # asked outside this transaction (see ``_reconcile``); still ``sending`` meanwhile
            return _Recheck(_orm_outgoing(job, message, integration))
        detail = "the previous attempt stopped mid-send: not resent, so never sent twice"
        _settle(session, message, "unknown", now, detail)
        return None
    if message.patient_id and opted_out(
        session, message.tenant_id, message.patient_id, message.channel
    ):
        _settle(session, message, "suppressed", now, "the patient opted out before sending")
        return None
    integration = _integration(session, message)
    if integration is None:
        _settle(session, message, "failed", now, "the integration is gone or disabled")
        return None
    message.status, message.send_started_at, message.updated_at = "sending", now, now
    add_event(session, message, "sending", source="worker", at=now)
    return _orm_outgoing(job, message, integration)


def _orm_outgoing(job: JobContext, message: Message, integration: Integration) -> Outgoing:
    credentials = open_credentials(_vault(job), integration)
    return _outgoing(
        job, message, integration.id, integration.connector, integration.settings, credentials
    )


def _prepare(job: JobContext, message_id: str) -> Outgoing | _Slow | None:
    """Step 1 for a message still ``queued`` (the usual case): read without a lock, then a
    group-committed opt-out check and compare-and-set to ``sending``. Anything unusual
    (already ``sending``, no integration, opted out, changed meanwhile) takes the careful
    path under the lock (``_start``)."""
    with job.db.engine.connect() as conn:
        row = conn.execute(send_writes.LOAD, {"b_id": message_id}).first()
    if row is None or row.status in FINAL_SEND_STATUSES:
        return None
    if row.status != "queued" or not row.enabled or row.connector not in SENDERS:
        return SLOW
    credentials = _vault(job).open(row.tenant_id, row.integration_id, row.credentials)
    out = _outgoing(job, row, row.integration_id, row.connector, row.settings, credentials)
    now = job.now()
    starting = send_writes.Starting(message_id, row.tenant_id, row.patient_id, row.channel, now)
    if not send_writes.mark_sending(job.db, starting):
        return SLOW
    return replace(out, send_started_at=now)


class _Slow:
    """``_prepare`` found something to look at under the lock (see ``_start``)."""


SLOW = _Slow()


def _integration(session: Session, message: Message) -> Integration | None:
    integration = (
        session.get(Integration, message.integration_id) if message.integration_id else None
    )
    if integration is None or not integration.enabled or integration.connector not in SENDERS:
        return None
    return integration


def _outgoing(
    job: JobContext,
    message: Any,  # a Message, or a row of send_writes.LOAD
    integration_id: str,
    connector: str,
    settings: dict[str, Any],
    credentials: dict[str, Secret],
) -> Outgoing:
    return Outgoing(
        message_id=message.id,
        tenant_id=message.tenant_id,
        integration_id=integration_id,
        provider=connector,
        channel=message.channel,
        to_address=message.to_address or "",
        subject=message.subject,
        body=message.body,
        html=message.html,
        language=message.language,
        attachments=list(message.attachments or []),
        settings=dict(settings),
        credentials=dict(credentials),
        db=job.db,
        public_base_url=job.settings.base_url if job.settings is not None else None,
        send_started_at=message.send_started_at,
        rate_limit=settings.get("rate_limit_per_second"),
        allowlist=job.settings.webhook_allowlist if job.settings is not None else "",
        provider_template=message.provider_template,
    )


def _reconcile(job: JobContext, out: Outgoing) -> Outgoing | None:
    """Ask the provider whether the interrupted attempt's message arrived (no transaction
    held): found → ``sent`` with its id; not found → send again (an attempt that starts
    now); the provider not answering → the job retries, the message stays ``sending``."""
    lookup = SENDERS[out.provider].lookup
    assert lookup is not None
    try:
        found = lookup(out)
    except ExternalServiceError as exc:
        if exc.retryable and job.attempt < job.max_attempts:
            raise
        with job.db.write() as session:
            message = session.get(Message, out.message_id, with_for_update=True)
            if message is not None and message.status == "sending":
                _settle(
                    session,
                    message,
                    "unknown",
                    job.now(),
                    f"the previous attempt stopped mid-send and the provider could not "
                    f"be asked: not resent ({exc.detail})",
                )
        return None
    with job.db.write() as session:
        message = session.get(Message, out.message_id, with_for_update=True)
        if message is None or message.status != "sending":
            return None  # settled meanwhile (a status callback, staff)
        now = job.now()
        if found is not None:
            message.status, message.provider_message_id = "sent", found
            message.sent_at = message.updated_at = now
            add_event(
                session,
                message,
                "sent",
                source="worker",
                at=now,
                detail="found at the provider after an attempt stopped mid-send",
            )
            return None
        if message.patient_id and opted_out(
            session, message.tenant_id, message.patient_id, message.channel
        ):
            _settle(session, message, "suppressed", now, "the patient opted out before sending")
            return None
        message.send_started_at = message.updated_at = now
        add_event(
            session,
            message,
            "sending",
            source="worker",
            at=now,
            detail="not found at the provider after an attempt stopped mid-send: sending again",
        )
    return out


def _wait_for_a_token(job: JobContext, out: Outgoing) -> None:
    """Keep the provider's rate (``rate_limit_per_second``) across all workers: a token
    from the shared bucket, or RateLimitedError (retried later, no attempt used).

    The bucket holds one token and refills at ``RATE_MARGIN`` of the rate: tokens are
    granted here, but the provider counts arrivals, and messages granted evenly can
    arrive bunched (a slow connection, then a fast one). The margin keeps any 1-second
    window at the provider under the rate."""
    if not out.rate_limit:
        return
    rate = float(out.rate_limit)
    limit = RateLimit(rate=rate * RATE_MARGIN, burst=1, max_wait=RATE_WAIT_S)
    key = f"send:{out.tenant_id}:{out.integration_id}"
    try:
        delay = TokenBucket(job.db).acquire(key, limit, job.now(), limit.max_wait)
    except RateLimitExceeded as exc:
        raise RateLimitedError(
            f"{out.provider}: over the clinic's rate of {rate:g}/s",
            integration=out.provider,
            retry_after=exc.retry_after,
        ) from None
    if delay > 0:
        time.sleep(delay)


def _settle(session: Session, message: Message, status: str, now: datetime, detail: str) -> None:
    message.status, message.updated_at = status, now
    if status in ("failed", "unknown"):
        message.error = detail[:500]
    add_event(session, message, status, source="worker", at=now, detail=detail)
    if status in FAILURE_STATUSES:
        failed(session, message, now)


@registry.handler(SEND_KIND, max_attempts=8)
def send(job: JobContext) -> None:
    message_id = str(job.payload["message_id"])
    started: Outgoing | _Recheck | _Slow | None = _prepare(job, message_id)
    if isinstance(started, _Slow):
        with job.db.write() as session:
            started = _start(session, job, message_id)
    out = _reconcile(job, started.out) if isinstance(started, _Recheck) else started
    if out is None:
        return
    try:
        _wait_for_a_token(job, out)
        provider_id = SENDERS[out.provider].send(out, job.now())
    except OutcomeUnknownError as exc:
        # Maybe sent: stays ``sending``; the next attempt asks the provider first.
        with job.db.write() as session:
            message = session.get(Message, message_id, with_for_update=True)
            assert message is not None
            if job.attempt >= job.max_attempts:
                _settle(session, message, "unknown", job.now(), exc.detail)
                return
            add_event(
                session,
                message,
                "sending",
                source="worker",
                at=job.now(),
                detail=f"outcome unknown, the provider will be asked: {exc.detail}",
            )
        raise
    except ExternalServiceError as exc:
        with job.db.write() as session:
            message = session.get(Message, message_id, with_for_update=True)
            assert message is not None
            if exc.retryable and (job.attempt < job.max_attempts or not exc.consumes_attempt):
                # refused before acceptance (connection, 4xx, our rate limit): nothing went out
                message.status, message.send_started_at = "queued", None
                message.updated_at = job.now()
                add_event(
                    session,
                    message,
                    "queued",
                    source="worker",
                    at=job.now(),
                    detail=f"retrying: {exc.detail}",
                )
            else:
                _settle(session, message, "failed", job.now(), exc.detail)
        if exc.retryable and (job.attempt < job.max_attempts or not exc.consumes_attempt):
            raise
        return
    send_writes.mark_sent(
        job.db, send_writes.Sent(message_id, out.tenant_id, provider_id, job.now())
    )
    log.info("message sent", extra={"fields": {"message_id": message_id, "provider": out.provider}})
