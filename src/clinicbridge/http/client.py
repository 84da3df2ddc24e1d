"""``OutboundClient``: the one way ClinicBridge calls an outside service.

Each call: breaker check → rate-limit token → send (timeouts always set) → on a
retryable failure, wait (``Retry-After`` or backoff with full jitter) and go again,
up to ``RetryPolicy.max_attempts`` → one call log row.

What the caller gets back:

* a response with any status below 500 other than a retryable one (429): 4xx
  answers belong to the caller, who knows what a 404 or a 402 means;
* ``ExternalServiceError`` for 5xx and 429 once retries are spent, and for
  transport failures (``retryable`` tells a job whether trying later can help);
* ``CircuitOpenError`` / ``RateLimitedError`` when refused before anything was
  sent (``consumes_attempt`` False: a job is rescheduled, not burned).

httpx errors become ours in ``_transport_error`` only. Messages name the
integration, operation, method and host; never the path, the query string,
headers, bodies or the httpx message (which may quote any of them).
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import certifi
import httpx

from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.errors import CircuitOpenError, ExternalServiceError, RateLimitedError
from clinicbridge.db.engine import Database
from clinicbridge.http.breaker import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    default_registry,
)
from clinicbridge.http.calllog import CallRecord, record_call
from clinicbridge.http.ratelimit import RateLimit, RateLimitExceeded, TokenBucket, bucket_key
from clinicbridge.http.retry import (
    DEFAULT_TIMEOUTS,
    TIMEOUT_CAPS,
    Failure,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    classify_exception,
    is_idempotent,
    may_retry_exception,
    may_retry_status,
    parse_retry_after,
)

log = logging.getLogger("clinicbridge.http")
# httpx logs every request's full URL (query string included) at INFO and httpcore
# logs response headers at DEBUG; neither may reach our logs.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

Sleep = Callable[[float], None]
Random = Callable[[], float]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every client: building one loads
    the CA bundle, which costs tens of milliseconds, more than most calls themselves."""
    return ssl.create_default_context(cafile=certifi.where())


class OutboundClient:
    """An httpx client for one (clinic, integration). Thread-safe; close it when done."""

    def __init__(
        self,
        db: Database,
        *,
        tenant_id: str | None,
        integration: str,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        rate_limit: RateLimit | None = None,
        breakers: BreakerRegistry | None = None,
        sleep: Sleep = time.sleep,
        rand: Random = random.random,
        idempotency_header: str = "Idempotency-Key",
    ) -> None:
        if not integration or len(integration) > 64:
            raise ValueError("integration must be 1 to 64 characters")
        self.db = db
        self.tenant_id = tenant_id
        self.integration = integration
        self.clock = clock or SystemClock()
        self.timeouts = timeouts.capped(TIMEOUT_CAPS)
        self.retry = retry or RetryPolicy()
        self.breaker_policy = breaker or BreakerPolicy()
        self.rate_limit = rate_limit
        self.idempotency_header = idempotency_header
        self._breaker: CircuitBreaker = (breakers or default_registry).get(tenant_id, integration)
        self._bucket = TokenBucket(db) if rate_limit else None
        self._bucket_key = bucket_key(tenant_id, integration)
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            transport=transport,
            verify=_tls_context(),
            timeout=self.timeouts.to_httpx(),
            follow_redirects=False,
        )

    # -- public API ---------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, str] | None = None,
        timeout: Timeouts | None = None,
        idempotency_key: str | None = None,
        idempotent: bool | None = None,
        max_wait: float | None = None,
    ) -> httpx.Response:
        """Send one request (``url`` is a path under ``base_url`` or absolute).

        ``operation`` names the call for logs and health ("payments.create_intent").
        ``idempotency_key`` is sent in ``idempotency_header`` and makes the call safe
        to retry after a read timeout; ``idempotent=True`` says it is safe without one.
        ``timeout`` overrides the client's timeouts, clamped to ``TIMEOUT_CAPS``.
        ``max_wait`` overrides ``RateLimit.max_wait`` for this call.
        """
        if not operation or len(operation) > 128:
            raise ValueError("operation must be 1 to 128 characters")
        method = method.upper()
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra[self.idempotency_header] = idempotency_key
        call = CallRecord(self.tenant_id, self.integration, operation, method)
        try:
            request = self._http.build_request(
                method,
                url,
                params=params,
                headers=extra,
                json=json,
                content=content,
                data=data,
                timeout=(timeout or self.timeouts).capped(TIMEOUT_CAPS).to_httpx(),
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise self._transport_error(call, exc) from exc
        call.host = request.url.host or "?"
        safe = is_idempotent(method, marked=idempotent, has_key=idempotency_key is not None)
        try:
            return self._send_with_retries(request, call, safe, max_wait)
        finally:
            if call.attempts:  # calls refused before sending are not logged
                record_call(self.db, call, self.clock.now())

    def get(self, url: str, *, operation: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, operation=operation, **kwargs)

    def post(self, url: str, *, operation: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, operation=operation, **kwargs)

    def breaker_state(self) -> BreakerState:
        return self._breaker.state(self.clock.now())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OutboundClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------

    def _send_with_retries(
        self, request: httpx.Request, call: CallRecord, safe: bool, max_wait: float | None
    ) -> httpx.Response:
        last: ExternalServiceError | None = None
        while True:
            refused = self._breaker.acquire(self.clock.now())
            if refused is not None:
                if last is not None:  # opened while we were retrying: report the real failure
                    raise _later(last, refused)
                raise CircuitOpenError(
                    self._describe(call, "refused: circuit open"),
                    integration=self.integration,
                    retry_after=refused,
                )
            try:
                self._take_token(max_wait)
            except RateLimitExceeded as exc:
                self._breaker.release()
                if last is not None:  # keeps its own cause: the real failure
                    raise _later(last, exc.retry_after)  # noqa: B904
                raise RateLimitedError(
                    self._describe(call, "refused: rate limit"),
                    integration=self.integration,
                    retry_after=exc.retry_after,
                ) from None
            except BaseException:
                self._breaker.release()
                raise
            call.attempts += 1
            response, last, delay = self._attempt(request, call, safe)
            if response is not None:
                return response
            assert last is not None
            if delay is None:
                raise last
            self._sleep(delay)

    def _attempt(
        self, request: httpx.Request, call: CallRecord, safe: bool
    ) -> tuple[httpx.Response | None, ExternalServiceError | None, float | None]:
        """One send: (response to return) or (error to raise, seconds before a retry or None)."""
        started = time.perf_counter()
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            call.seconds_on_wire += time.perf_counter() - started
            call.status, call.error_class, call.success = None, type(exc).__name__, False
            if classify_exception(exc) is Failure.FINAL:
                self._breaker.release()
            else:
                self._breaker.record_failure(self.clock.now(), self.breaker_policy)
            error = self._transport_error(call, exc)
            retry = may_retry_exception(exc, idempotent=safe) and self._attempts_left(call)
            self._log_failure(call, retry)
            return None, error, self._backoff(call) if retry else None
        except BaseException as exc:  # not httpx's: a bug or an interrupt, logged as such
            call.status, call.error_class, call.success = None, type(exc).__name__, False
            self._breaker.release()
            raise
        call.seconds_on_wire += time.perf_counter() - started
        status = response.status_code
        call.status, call.success = status, status < 400
        call.error_class = None if call.success else "HTTPStatusError"
        if status >= 500:
            self._breaker.record_failure(self.clock.now(), self.breaker_policy)
        else:  # a 4xx, 429 included, means the provider is up and answering
            self._breaker.record_success()
        if status < 500 and status not in self.retry.retry_statuses:
            return response, None, None
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
        error = ExternalServiceError(
            self._describe(call, f"answered HTTP {status}"),
            integration=self.integration,
            status_code=status,
            retryable=True,
            retry_after=retry_after,
        )
        retry = may_retry_status(status, self.retry, idempotent=safe) and self._attempts_left(call)
        if retry and retry_after is not None and retry_after > self.retry.max_retry_after:
            retry = False  # too long to hold a thread: the job comes back after retry_after
        self._log_failure(call, retry)
        if not retry:
            return None, error, None
        return None, error, retry_after if retry_after is not None else self._backoff(call)

    def _attempts_left(self, call: CallRecord) -> bool:
        return call.attempts < self.retry.max_attempts

    def _backoff(self, call: CallRecord) -> float:
        return backoff_delay(call.attempts, self.retry, self._rand)

    def _take_token(self, max_wait: float | None) -> None:
        if self._bucket is None or self.rate_limit is None:
            return
        wait = self.rate_limit.max_wait if max_wait is None else max_wait
        delay = self._bucket.acquire(self._bucket_key, self.rate_limit, self.clock.now(), wait)
        if delay > 0:
            self._sleep(delay)

    # -- translation, logging -------------------------------------------------

    def _transport_error(self, call: CallRecord, exc: Exception) -> ExternalServiceError:
        """The one place httpx exceptions become ours. Uses the class name only."""
        retryable = (
            isinstance(exc, httpx.HTTPError) and classify_exception(exc) is not Failure.FINAL
        )
        error = ExternalServiceError(
            self._describe(call, f"failed: {type(exc).__name__}"),
            integration=self.integration,
            retryable=retryable,
        )
        # What ``raise error from exc`` does; the error may be raised after a retry loop.
        error.__cause__ = exc
        return error

    def _describe(self, call: CallRecord, what: str) -> str:
        tries = f" after {call.attempts} attempt(s)" if call.attempts else ""
        return f"{self.integration} {call.operation}: {call.method} {call.host} {what}{tries}"

    def _log_failure(self, call: CallRecord, will_retry: bool) -> None:
        log.warning(
            "outbound attempt failed",
            extra={
                "fields": {
                    "tenant_id": self.tenant_id,
                    "integration": self.integration,
                    "operation": call.operation,
                    "method": call.method,
                    "host": call.host,
                    "status": call.status,
                    "error_class": call.error_class,
                    "attempt": call.attempts,
                    "will_retry": will_retry,
                }
            },
        )


def _later(error: ExternalServiceError, seconds: float) -> ExternalServiceError:
    """The last real failure, told to come back no sooner than ``seconds``."""
    error.retry_after = max(error.retry_after or 0.0, seconds)
    return error
