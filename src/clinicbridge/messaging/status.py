"""Status callbacks from providers (Twilio, SendGrid, Resend, Mailgun...), applied to
our messages by the provider's message id.

Callbacks arrive late, twice, or out of order (``delivered`` before ``sent``). A
status only moves forward: each has a rank, a lower one never replaces a higher
one, and every callback still lands in the timeline. Engagement (opened, clicked)
ranks above delivery; a failure after delivery (a late bounce) wins over it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import FAILURE_STATUSES, add_event, failed

RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "opened": 4,
    "read": 4,
    "clicked": 5,
    "undelivered": 6,
    "failed": 6,
    "bounced": 6,
    "dropped": 6,
    "complained": 7,
}


def apply_provider_status(
    session: Session,
    *,
    provider: str,
    provider_message_id: str,
    status: str,
    at: datetime,
    detail: str | None = None,
    cost_minor: int | None = None,
    cost_currency: str | None = None,
) -> Message | None:
    """Record a provider's word on a message; None when it is not one of ours."""
    if status not in RANK:
        raise ValueError(f"unknown message status {status!r}")
    message = session.scalars(
        sa.select(Message)
        .where(Message.provider == provider, Message.provider_message_id == provider_message_id)
        .with_for_update()
    ).first()
    if message is None:
        return None
    add_event(session, message, status, source="provider", at=at, detail=detail)
    if RANK[status] >= RANK.get(message.status, 0):
        first_failure = status in FAILURE_STATUSES and message.status not in FAILURE_STATUSES
        message.status = status
        if status in FAILURE_STATUSES and detail:
            message.error = detail[:500]
        if first_failure:
            failed(session, message, at)
    if cost_minor is not None:
        message.cost_minor, message.cost_currency = cost_minor, cost_currency
    message.updated_at = at
    return message
