"""The one outbound HTTP client: timeouts, retries, circuit breaker, rate limits, call log.

Errors raised (from ``clinicbridge.core.errors``)::

    ExternalServiceError      5xx or 429 after retries, transport failures
    ├── CircuitOpenError      refused: breaker open (retry_after = cool-down left)
    └── RateLimitedError      refused: no token within max_wait (retry_after)
"""

from __future__ import annotations

from clinicbridge.http.breaker import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    breaker_state,
)
from clinicbridge.http.calllog import CallSummary, purge_expired, summarize
from clinicbridge.http.client import OutboundClient
from clinicbridge.http.ratelimit import RateLimit
from clinicbridge.http.retry import (
    DEFAULT_TIMEOUTS,
    TIMEOUT_CAPS,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_TIMEOUTS",
    "TIMEOUT_CAPS",
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerState",
    "CallSummary",
    "OutboundClient",
    "RateLimit",
    "RetryPolicy",
    "Timeouts",
    "backoff_delay",
    "breaker_state",
    "parse_retry_after",
    "purge_expired",
    "summarize",
]
