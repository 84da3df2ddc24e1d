"""Timeouts, the retry rule, backoff with full jitter and ``Retry-After`` parsing.

Everything here is a pure function of its arguments (time and randomness are
passed in), so the rules are tested without a network or a clock.

The retry rule
--------------
A retry sends the request again. That is always safe when the provider cannot
have acted on the first one, and safe otherwise only when acting twice is harmless:

* never processed, retried for every method: connect errors and connect
  timeouts, pool timeouts, proxy errors, 429 and 503;
* maybe processed, retried only for idempotent calls (GET, HEAD, OPTIONS, PUT,
  DELETE, TRACE, WebDAV's PROPFIND and REPORT, or any call given an idempotency key or
  marked idempotent):
  read and write timeouts, dropped connections, 502 and 504;
* everything else is final: other 4xx and 5xx (500 included), invalid URLs,
  protocol and decoding errors.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import httpx

# PROPFIND and REPORT (WebDAV, CalDAV) only read: safe and idempotent (RFC 4918, 3253).
IDEMPOTENT_METHODS = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "PROPFIND", "REPORT"}
)
# A bogus ``Retry-After: 99999999`` must not park a job for years.
RETRY_AFTER_CEILING = 86_400.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase of a request; every one is always set."""

    connect: float = 5.0
    read: float = 15.0
    write: float = 15.0
    pool: float = 5.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"timeout '{name}' must be a positive number of seconds")

    def capped(self, caps: Timeouts) -> Timeouts:
        return Timeouts(
            connect=min(self.connect, caps.connect),
            read=min(self.read, caps.read),
            write=min(self.write, caps.write),
            pool=min(self.pool, caps.pool),
        )

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


DEFAULT_TIMEOUTS = Timeouts()
# Per-call overrides are clamped to these: a slow provider may get more time,
# but no call may hold a worker thread for minutes.
TIMEOUT_CAPS = Timeouts(connect=10.0, read=60.0, write=60.0, pool=10.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one call.

    ``max_retry_after`` is the longest ``Retry-After`` we wait in-process; a
    longer one ends the call at once with ``retry_after`` set on the error so a
    background job is rescheduled instead of holding a thread.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    # Statuses the provider may have acted on before failing (gateway errors).
    maybe_processed_statuses: frozenset[int] = frozenset({502, 504})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry delays must not be negative")


class Failure(Enum):
    """How a transport error relates to the provider having seen the request."""

    NOT_SENT = "not_sent"  # safe to retry for any method
    MAYBE_PROCESSED = "maybe_processed"  # retry only idempotent calls
    FINAL = "final"  # retrying cannot help


def classify_exception(exc: httpx.HTTPError) -> Failure:
    # Order matters: ConnectTimeout is a TimeoutException, ProxyError a TransportError.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.NOT_SENT
    if isinstance(exc, httpx.ProxyError):
        return Failure.NOT_SENT
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return Failure.MAYBE_PROCESSED
    return Failure.FINAL


def is_idempotent(method: str, *, marked: bool | None = None, has_key: bool = False) -> bool:
    """``marked`` overrides the method's default; an idempotency key makes any call safe."""
    if has_key:
        return True
    if marked is not None:
        return marked
    return method.upper() in IDEMPOTENT_METHODS


def may_retry_exception(exc: httpx.HTTPError, *, idempotent: bool) -> bool:
    failure = classify_exception(exc)
    return failure is Failure.NOT_SENT or (failure is Failure.MAYBE_PROCESSED and idempotent)


def may_retry_status(status: int, policy: RetryPolicy, *, idempotent: bool) -> bool:
    if status not in policy.retry_statuses:
        return False
    return idempotent or status not in policy.maybe_processed_statuses


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))].

    ``attempt`` is the number of the attempt that just failed (1 for the first).
    ``rand`` returns a float in [0, 1), like ``random.random``.
    """
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** max(0, attempt - 1))
    return max(0.0, min(ceiling, rand() * ceiling))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    Returns None when absent or unparseable, 0 for a date in the past, and never
    more than ``RETRY_AFTER_CEILING``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no claim about the zone
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
        return min(max(0.0, seconds), RETRY_AFTER_CEILING)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CEILING)
