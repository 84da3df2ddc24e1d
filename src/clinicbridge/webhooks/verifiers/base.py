"""What every inbound webhook verifier takes, returns and raises.

A verifier is a pure function ``verify(request, secrets, now) -> Verified``: no
database, no network, no clock of its own. ``secrets`` holds every secret valid
for the integration right now (during rotation the new and the old one); a
signature made with any of them passes. Verifiers parse the body only after a
signature matched, and raise ``WebhookVerificationError`` with a short detail
for our logs (never a secret, a signature or body content).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from clinicbridge.core.errors import WebhookVerificationError

__all__ = [
    "TOLERANCE",
    "InboundEvent",
    "Verified",
    "Verifier",
    "WebhookRequest",
    "WebhookVerificationError",
    "check_timestamp",
    "constant_time_equal",
    "content_id",
    "from_unix",
    "parse_json",
    "parse_unix_timestamp",
    "require_header",
]

TOLERANCE = timedelta(minutes=5)
# Up to 11 digits reaches the year 5138: long enough, and short enough that
# datetime never overflows on a hostile value.
_MAX_TIMESTAMP_DIGITS = 11


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    url: str  # the public URL the provider called, rebuilt by the caller from the base URL
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes


@dataclass(frozen=True)
class InboundEvent:
    provider_event_id: str  # the provider's id for dedupe, else a sha256 of the signed content
    type: str  # e.g. "payment_intent.succeeded", "message.status", "email.delivered"
    occurred_at: datetime | None  # timezone-aware UTC
    payload: dict[str, Any]  # the parsed event (one item for batch providers)


@dataclass(frozen=True)
class Verified:
    events: list[InboundEvent]  # batch providers (SendGrid) give several
    response: dict[str, Any] | None = None  # a body to answer with instead of the default


class Verifier(Protocol):
    def __call__(
        self, request: WebhookRequest, secrets: Sequence[str], now: datetime
    ) -> Verified: ...


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare without leaking where the first difference is."""
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)


def check_timestamp(ts: datetime, now: datetime, tolerance: timedelta = TOLERANCE) -> None:
    """Reject a timestamp too far in the past (replay) or in the future (pre-signed)."""
    if ts < now - tolerance:
        raise WebhookVerificationError("timestamp outside tolerance (too old)")
    if ts > now + tolerance:
        raise WebhookVerificationError("timestamp outside tolerance (too new)")


def require_header(request: WebhookRequest, name: str) -> str:
    """The value of header ``name`` (lower-case), or an error naming the header."""
    value = request.headers.get(name, "").strip()
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def parse_unix_timestamp(value: str, name: str) -> datetime:
    """Integer seconds since the epoch, as providers put them in headers, in UTC."""
    text = value.strip()
    # isdigit() would accept non-ASCII digits, which int() reads but no provider signs.
    if not (0 < len(text) <= _MAX_TIMESTAMP_DIGITS and text.isascii() and text.isdigit()):
        raise WebhookVerificationError(f"invalid timestamp in {name}")
    return datetime.fromtimestamp(int(text), tz=UTC)


def from_unix(value: object) -> datetime | None:
    """A body's epoch-seconds field as UTC, or None when absent or not a sane number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value < 10**_MAX_TIMESTAMP_DIGITS:
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def content_id(*parts: bytes) -> str:
    """A dedupe id for providers without one: sha256 over the signed content."""
    digest = hashlib.sha256()
    for part in parts:
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def parse_json(body: bytes) -> Any:
    """The signed body as JSON; call only after a signature matched."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 too
        raise WebhookVerificationError("signed body is not valid JSON") from exc
