from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from clinicbridge.http import (
    DEFAULT_TIMEOUTS,
    TIMEOUT_CAPS,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    parse_retry_after,
)
from clinicbridge.http.breaker import BreakerPolicy, BreakerRegistry, CircuitBreaker
from clinicbridge.http.retry import (
    RETRY_AFTER_CEILING,
    is_idempotent,
    may_retry_exception,
    may_retry_status,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
REQUEST = httpx.Request("POST", "https://api.example.com/v1/things")


# -- backoff -------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, policy, rng.random) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(delays) < ceiling * 0.05
        assert max(delays) > ceiling * 0.95


def test_backoff_ends_of_the_range() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert backoff_delay(1, policy, lambda: 0.0) == 0.0
    assert backoff_delay(1, policy, lambda: 0.999999) == pytest.approx(1.0, abs=1e-5)
    assert backoff_delay(3, policy, lambda: 0.999999) == pytest.approx(4.0, abs=1e-5)
    assert backoff_delay(10, policy, lambda: 0.999999) == pytest.approx(10.0, abs=1e-4)
    assert backoff_delay(80, policy, lambda: 0.5) == 5.0  # no overflow for huge attempts


# -- Retry-After -------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after("1.5", NOW) == 1.5


def test_retry_after_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, NOW) == 42.0
    earlier = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, NOW) == 0.0
    # The obsolete RFC 850 form is still legal in Retry-After.
    assert parse_retry_after("Monday, 05-Jan-26 09:00:10 GMT", NOW) == 10.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "Mon, 99 Foo 2026"])
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_is_capped() -> None:
    assert parse_retry_after("999999999", NOW) == RETRY_AFTER_CEILING
    far = format_datetime(NOW + timedelta(days=400), usegmt=True)
    assert parse_retry_after(far, NOW) == RETRY_AFTER_CEILING


# -- the retry rule ---------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_for_idempotent_calls(status: int) -> None:
    assert may_retry_status(status, RetryPolicy(), idempotent=True)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 422, 500, 501])
def test_other_statuses_are_final(status: int) -> None:
    assert not may_retry_status(status, RetryPolicy(), idempotent=True)


def test_gateway_errors_are_not_retried_for_unsafe_calls() -> None:
    policy = RetryPolicy()
    # 429 and 503: the provider refused, it did not act. 502/504: it may have.
    assert may_retry_status(429, policy, idempotent=False)
    assert may_retry_status(503, policy, idempotent=False)
    assert not may_retry_status(502, policy, idempotent=False)
    assert not may_retry_status(504, policy, idempotent=False)


def test_connection_failures_are_retried_for_every_method() -> None:
    for exc in (
        httpx.ConnectError("refused", request=REQUEST),
        httpx.ConnectTimeout("slow", request=REQUEST),
        httpx.PoolTimeout("busy", request=REQUEST),
    ):
        assert may_retry_exception(exc, idempotent=False)


def test_read_timeouts_only_for_idempotent_calls() -> None:
    for exc in (
        httpx.ReadTimeout("slow", request=REQUEST),
        httpx.WriteTimeout("slow", request=REQUEST),
        httpx.ReadError("reset", request=REQUEST),
        httpx.RemoteProtocolError("closed", request=REQUEST),
    ):
        assert may_retry_exception(exc, idempotent=True)
        assert not may_retry_exception(exc, idempotent=False)


def test_local_errors_are_never_retried() -> None:
    for exc in (
        httpx.UnsupportedProtocol("ftp", request=REQUEST),
        httpx.LocalProtocolError("bad header", request=REQUEST),
        httpx.DecodingError("gzip", request=REQUEST),
        httpx.TooManyRedirects("loop", request=REQUEST),
    ):
        assert not may_retry_exception(exc, idempotent=True)


def test_idempotency() -> None:
    for method in ("GET", "head", "OPTIONS", "PUT", "DELETE", "PROPFIND", "report"):
        assert is_idempotent(method)
    for method in ("POST", "PATCH"):
        assert not is_idempotent(method)
        assert is_idempotent(method, has_key=True)
        assert is_idempotent(method, marked=True)
    assert not is_idempotent("PUT", marked=False)


# -- timeouts -------------------------------------------------------------------------


def test_timeouts_all_set_and_capped() -> None:
    t = DEFAULT_TIMEOUTS.to_httpx()
    assert (t.connect, t.read, t.write, t.pool) == (5.0, 15.0, 15.0, 5.0)
    huge = Timeouts(connect=100, read=1000, write=1000, pool=100).capped(TIMEOUT_CAPS)
    assert huge == TIMEOUT_CAPS
    assert Timeouts(read=30).capped(TIMEOUT_CAPS).read == 30


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_timeouts_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="read"):
        Timeouts(read=bad)


def test_policies_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerPolicy(failure_threshold=0)


# -- the breaker as a state machine ------------------------------------------------------


def test_breaker_state_machine() -> None:
    policy = BreakerPolicy(failure_threshold=3, cooldown=30)
    breaker = CircuitBreaker()
    for _ in range(2):
        assert breaker.acquire(NOW) is None
        breaker.record_failure(NOW, policy)
    assert breaker.state(NOW) == "closed"
    breaker.record_success()  # consecutive failures only
    for _ in range(3):
        breaker.record_failure(NOW, policy)
    assert breaker.state(NOW) == "open"
    assert breaker.acquire(NOW + timedelta(seconds=10)) == 20.0
    later = NOW + timedelta(seconds=30)
    assert breaker.state(later) == "half_open"
    assert breaker.acquire(later) is None  # the one trial
    assert breaker.acquire(later) is not None  # everyone else waits for it
    breaker.record_failure(later, policy)  # trial failed: open for another cool-down
    assert breaker.state(later + timedelta(seconds=29)) == "open"
    again = later + timedelta(seconds=30)
    assert breaker.acquire(again) is None
    breaker.record_success()
    assert breaker.state(again) == "closed"
    assert breaker.acquire(again) is None


def test_a_released_trial_lets_the_next_caller_try() -> None:
    breaker = CircuitBreaker()
    policy = BreakerPolicy(failure_threshold=1, cooldown=5)
    breaker.record_failure(NOW, policy)
    later = NOW + timedelta(seconds=5)
    assert breaker.acquire(later) is None
    breaker.release()
    assert breaker.acquire(later) is None


def test_registry_keys_by_tenant_and_integration() -> None:
    registry = BreakerRegistry()
    registry.get("ten_a", "stripe").record_failure(NOW, BreakerPolicy(failure_threshold=1))
    assert registry.state("ten_a", "stripe", NOW) == "open"
    assert registry.state("ten_b", "stripe", NOW) == "closed"
    assert registry.state("ten_a", "twilio", NOW) == "closed"
