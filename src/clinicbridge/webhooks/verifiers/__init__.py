"""Inbound webhook signature verifiers, one pure ``verify()`` per signing scheme.

Each provider module (``stripe``, ``twilio``, ``sendgrid``, ``standard``, ...)
has ``verify(request, secrets, now) -> Verified``; this package re-exports the
shared types they take and return (helpers for writing one live in ``base``).
"""

from __future__ import annotations

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    TOLERANCE,
    InboundEvent,
    Verified,
    Verifier,
    WebhookRequest,
    check_timestamp,
    constant_time_equal,
)

__all__ = [
    "TOLERANCE",
    "InboundEvent",
    "Verified",
    "Verifier",
    "WebhookRequest",
    "WebhookVerificationError",
    "check_timestamp",
    "constant_time_equal",
]
