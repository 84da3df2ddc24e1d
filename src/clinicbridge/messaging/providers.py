"""Which provider sends what: each sender registers its connector key, the channels it
carries and the function that makes the call.

A sender gets an ``Outgoing`` (everything read before the call, no ORM object) and
returns the provider's message id; it raises ``ExternalServiceError`` with
``retryable`` set when trying again can help and nothing went out. A sender whose
provider can be asked about a message by our own id also gives ``lookup``, so an
attempt cut short is reconciled instead of being marked unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from clinicbridge.core.errors import CircuitOpenError, ExternalServiceError, RateLimitedError
from clinicbridge.http.retry import Failure, classify_exception

if TYPE_CHECKING:
    from clinicbridge.db.engine import Database

# Statuses after which the provider cannot have accepted the message.
_NOT_ACCEPTED = frozenset({429, 503})


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    tenant_id: str
    integration_id: str
    provider: str
    channel: str
    to_address: str
    subject: str | None
    body: str
    html: str | None
    language: str | None
    attachments: list[dict[str, str]]
    settings: dict[str, Any]
    credentials: dict[str, Any]
    # Given by the send job: the database (call log, lookups), where providers can
    # reach us (status callbacks), when this attempt started, the provider's rate.
    db: Database | None = None
    public_base_url: str | None = None
    send_started_at: datetime | None = None
    rate_limit: float | None = None
    # CLINICBRIDGE_WEBHOOK_ALLOWLIST: where a sender given URLs by others (web push
    # endpoints) may connect although the address is not public.
    allowlist: str = ""
    # A template the provider renders itself (see ``Message.provider_template``).
    provider_template: dict[str, Any] | None = None


class OutcomeUnknownError(ExternalServiceError):
    """The request may have reached the provider (a timeout after sending, a 502): the
    message stays ``sending`` and the next attempt asks the provider (``lookup``)
    before sending again, or marks it ``unknown`` when the provider cannot be asked."""

    retryable = True


def maybe_accepted(exc: ExternalServiceError) -> bool:
    """Whether the provider may have accepted the message before this failure: not after
    a refusal here (open breaker, our rate limit), a 429 or 503, or a connection that
    never carried the request."""
    if isinstance(exc, CircuitOpenError | RateLimitedError):
        return False
    if exc.status_code is not None:
        return exc.status_code not in _NOT_ACCEPTED
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPError):
        return classify_exception(cause) is not Failure.NOT_SENT
    return True  # unknown: assume the worst


SendFn = Callable[[Outgoing, datetime], str]
# The provider's id of a message we sent (by our id), or None if it never arrived.
LookupFn = Callable[[Outgoing], str | None]


@dataclass(frozen=True)
class Sender:
    connector: str
    channels: tuple[str, ...]
    send: SendFn
    lookup: LookupFn | None = None


SENDERS: dict[str, Sender] = {}


def register(sender: Sender) -> None:
    if sender.connector in SENDERS:
        raise ValueError(f"a sender for {sender.connector!r} is already registered")
    SENDERS[sender.connector] = sender


def connectors_for(channel: str) -> tuple[str, ...]:
    """Connector keys that carry ``channel``, in registration order (preference)."""
    return tuple(key for key, s in SENDERS.items() if channel in s.channels)
