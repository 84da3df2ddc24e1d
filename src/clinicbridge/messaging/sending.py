"""The send job: at most once per message, even when a worker dies mid-send.

1. In a transaction: skip a message already settled; re-check the opt-out (it may
   have come between queueing and sending); mark it ``sending`` with
   ``send_started_at``. Committed before the provider is called.
2. Call the provider (no transaction held).
3. Record ``sent`` with the provider's id, or ``failed``; an error the provider
   says is temporary puts the message back to ``queued`` and the job retries.

A job that finds a message already ``sending`` is a retry after a crash between
1 and 3: the outcome is unknown. Providers that can be asked (by our own id) are
asked before any resend; SMTP cannot be, so such a message is marked ``unknown``
and never resent: a patient may miss one e-mail, never get two.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.service import open_credentials
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.models import FINAL_SEND_STATUSES, Message
from clinicbridge.messaging.providers import SENDERS, Outgoing
from clinicbridge.messaging.service import SEND_KIND, add_event, opted_out
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault

log = logging.getLogger("clinicbridge.messaging")


def _vault(job: JobContext) -> Vault:
    if job.settings is None:
        raise RuntimeError("the send job needs the service settings (master key file)")
    return shared_vault(job.db, job.settings.master_key_file)


def _start(session: Session, job: JobContext, message_id: str) -> Outgoing | None:
    """Step 1; None when there is nothing (more) to send."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.status in FINAL_SEND_STATUSES:
        return None
    now = job.now()
    if message.status == "sending":
        detail = "the previous attempt stopped mid-send: not resent, so never sent twice"
        _settle(session, message, "unknown", now, detail)
        return None
    if message.patient_id and opted_out(session, message.tenant_id, message.patient_id,
                                        message.channel):  # fmt: skip
        _settle(session, message, "suppressed", now, "the patient opted out before sending")
        return None
    integration = (
        session.get(Integration, message.integration_id) if message.integration_id else None
    )
    if integration is None or not integration.enabled or integration.connector not in SENDERS:
        _settle(session, message, "failed", now, "the integration is gone or disabled")
        return None
    message.status, message.send_started_at, message.updated_at = "sending", now, now
    add_event(session, message, "sending", source="worker", at=now)
    return Outgoing(
        message_id=message.id,
        tenant_id=message.tenant_id,
        integration_id=integration.id,
        provider=integration.connector,
        channel=message.channel,
        to_address=message.to_address or "",
        subject=message.subject,
        body=message.body,
        html=message.html,
        language=message.language,
        attachments=list(message.attachments or []),
        settings=dict(integration.settings),
        credentials=dict(open_credentials(_vault(job), integration)),
    )


def _settle(session: Session, message: Message, status: str, now: datetime, detail: str) -> None:
    message.status, message.updated_at = status, now
    if status in ("failed", "unknown"):
        message.error = detail[:500]
    add_event(session, message, status, source="worker", at=now, detail=detail)


@registry.handler(SEND_KIND, max_attempts=8)
def send(job: JobContext) -> None:
    message_id = str(job.payload["message_id"])
    with job.db.write() as session:
        out = _start(session, job, message_id)
    if out is None:
        return
    try:
        provider_id = SENDERS[out.provider].send(out, job.now())
    except ExternalServiceError as exc:
        with job.db.write() as session:
            message = session.get(Message, message_id, with_for_update=True)
            assert message is not None
            if exc.retryable and job.attempt < job.max_attempts:
                # refused before acceptance (connection, 4xx): nothing went out
                message.status, message.send_started_at = "queued", None
                message.updated_at = job.now()
                add_event(session, message, "queued", source="worker", at=job.now(),
                          detail=f"retrying: {exc.detail}")  # fmt: skip
            else:
                _settle(session, message, "failed", job.now(), exc.detail)
        if exc.retryable and job.attempt < job.max_attempts:
            raise
        return
    with job.db.write() as session:
        message = session.get(Message, message_id, with_for_update=True)
        assert message is not None
        now = job.now()
        message.status, message.provider_message_id = "sent", provider_id
        message.sent_at = message.updated_at = now
        add_event(session, message, "sent", source="worker", at=now)
    log.info("message sent", extra={"fields": {"message_id": message_id, "provider": out.provider}})
