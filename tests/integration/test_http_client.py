"""The outbound client against ``httpx.MockTransport``, a fake clock and a recorded sleep."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clinicbridge.core.clock import FakeClock, SystemClock
from clinicbridge.core.errors import CircuitOpenError, ExternalServiceError, RateLimitedError
from clinicbridge.core.ids import new_id
from clinicbridge.core.logs import JsonFormatter
from clinicbridge.db.engine import Database, create_database
from clinicbridge.http import (
    BreakerPolicy,
    BreakerRegistry,
    OutboundClient,
    RateLimit,
    RetryPolicy,
    Timeouts,
    breaker_state,
    purge_expired,
    summarize,
)
from clinicbridge.http.models import HttpCall
from clinicbridge.jobs.worker import Worker
from tests.tls_support import self_signed_server_context

Reply = int | httpx.Response | Exception


class Provider:
    """A scripted provider: one reply per request, the last one repeats."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [200]
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, int):
            return httpx.Response(reply, json={"status": reply})
        return reply

    @property
    def calls(self) -> int:
        return len(self.requests)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(
    db: Database, clock: FakeClock, sleeps: Sleeps
) -> Iterator[Callable[..., OutboundClient]]:
    clients: list[OutboundClient] = []

    def factory(provider: Provider, **kwargs: Any) -> OutboundClient:
        options: dict[str, Any] = {
            "tenant_id": new_id("ten"),
            "integration": "acme",
            "base_url": "https://api.acme.test",
            "clock": clock,
            "sleep": sleeps,
            "rand": lambda: 0.5,
            "breakers": BreakerRegistry(),
        }
        options.update(kwargs)
        client = OutboundClient(
            options.pop("db", db), transport=httpx.MockTransport(provider), **options
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def call_rows(db: Database) -> list[HttpCall]:
    with db.read() as session:
        return list(session.scalars(sa.select(HttpCall).order_by(HttpCall.id)))


# -- timeouts ---------------------------------------------------------------------------


def test_every_request_has_all_four_timeouts(make_client: Callable[..., OutboundClient]) -> None:
    provider = Provider(200)
    client = make_client(provider)
    client.get("/v1/a", operation="a")
    client.post("/v1/b", operation="b", json={}, timeout=Timeouts(connect=2, read=40))
    client.get("/v1/c", operation="c", timeout=Timeouts(connect=99, read=600, write=600, pool=99))
    seen = [r.extensions["timeout"] for r in provider.requests]
    assert seen[0] == {"connect": 5.0, "read": 15.0, "write": 15.0, "pool": 5.0}
    assert seen[1] == {"connect": 2.0, "read": 40.0, "write": 15.0, "pool": 5.0}
    assert seen[2] == {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 10.0}  # capped


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps, status: int
) -> None:
    provider = Provider(status, status, 200)
    response = make_client(provider).get("/v1/things", operation="things.list")
    assert response.status_code == 200
    assert provider.calls == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("connection refused"), httpx.ConnectTimeout("connect timed out")],
)
def test_connect_failures_are_retried_even_for_post(
    make_client: Callable[..., OutboundClient], error: Exception
) -> None:
    provider = Provider(error, 201)
    response = make_client(provider).post("/v1/things", operation="things.create", json={})
    assert response.status_code == 201
    assert provider.calls == 2


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_client_errors_are_returned_at_once(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps, status: int
) -> None:
    provider = Provider(status, 200)
    response = make_client(provider).get("/v1/things", operation="things.list")
    assert response.status_code == status
    assert provider.calls == 1
    assert sleeps == []


def test_500_is_not_retried(make_client: Callable[..., OutboundClient], sleeps: Sleeps) -> None:
    provider = Provider(500, 200)
    with pytest.raises(ExternalServiceError) as info:
        make_client(provider).get("/v1/things", operation="things.list")
    assert info.value.status_code == 500
    assert info.value.consumes_attempt
    assert provider.calls == 1
    assert sleeps == []


def test_gives_up_after_max_attempts(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps
) -> None:
    provider = Provider(503)
    client = make_client(provider, retry=RetryPolicy(max_attempts=4))
    with pytest.raises(ExternalServiceError) as info:
        client.get("/v1/things", operation="things.list")
    assert type(info.value) is ExternalServiceError
    assert info.value.status_code == 503
    assert info.value.retryable
    assert provider.calls == 4
    assert len(sleeps) == 3


def test_read_timeout_is_not_retried_for_post(make_client: Callable[..., OutboundClient]) -> None:
    provider = Provider(httpx.ReadTimeout("timed out"), 201)
    with pytest.raises(ExternalServiceError) as info:
        make_client(provider).post("/v1/charges", operation="charges.create", json={"a": 1})
    assert provider.calls == 1
    assert "ReadTimeout" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_read_timeout_is_retried_for_get(make_client: Callable[..., OutboundClient]) -> None:
    provider = Provider(httpx.ReadTimeout("timed out"), 200)
    assert make_client(provider).get("/v1/charges/1", operation="charges.get").status_code == 200
    assert provider.calls == 2


def test_read_timeout_is_retried_for_post_with_an_idempotency_key(
    make_client: Callable[..., OutboundClient],
) -> None:
    provider = Provider(httpx.ReadTimeout("timed out"), 201)
    client = make_client(provider)
    response = client.post("/v1/charges", operation="charges.create", idempotency_key="k-1")
    assert response.status_code == 201
    assert [r.headers["Idempotency-Key"] for r in provider.requests] == ["k-1", "k-1"]

    provider.script(httpx.ReadTimeout("timed out"), 201)
    client.post("/v1/refunds", operation="refunds.create", idempotent=True)
    assert provider.calls == 4


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_on_post_are_retried_only_with_a_key(
    make_client: Callable[..., OutboundClient], status: int
) -> None:
    provider = Provider(status, 201)
    client = make_client(provider)
    with pytest.raises(ExternalServiceError):
        client.post("/v1/charges", operation="charges.create")
    assert provider.calls == 1
    provider.script(status, 201)
    assert client.post("/v1/charges", operation="c", idempotency_key="k").status_code == 201
    assert provider.calls == 3


def test_backoff_is_exponential_with_full_jitter(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps
) -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=5.0)
    client = make_client(Provider(503), retry=policy, rand=lambda: 0.999999)
    with pytest.raises(ExternalServiceError):
        client.get("/v1/x", operation="x")
    assert sleeps == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0], abs=1e-4)

    sleeps.clear()
    client = make_client(Provider(503), retry=policy, rand=lambda: 0.0)
    with pytest.raises(ExternalServiceError):
        client.get("/v1/x", operation="x")
    assert sleeps == [0.0] * 5


# -- Retry-After -----------------------------------------------------------------------


def test_retry_after_seconds_is_honoured(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps
) -> None:
    provider = Provider(httpx.Response(429, headers={"Retry-After": "3"}), 200)
    assert make_client(provider).get("/v1/x", operation="x").status_code == 200
    assert sleeps == [3.0]


def test_retry_after_date_is_honoured(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps, clock: FakeClock
) -> None:
    when = format_datetime(clock.now() + timedelta(seconds=7), usegmt=True)
    provider = Provider(httpx.Response(503, headers={"Retry-After": when}), 200)
    assert make_client(provider).get("/v1/x", operation="x").status_code == 200
    assert sleeps == [7.0]


def test_retry_after_beyond_the_cap_ends_the_call_with_retry_after(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps
) -> None:
    provider = Provider(httpx.Response(429, headers={"Retry-After": "3600"}), 200)
    client = make_client(provider, retry=RetryPolicy(max_retry_after=60))
    with pytest.raises(ExternalServiceError) as info:
        client.get("/v1/x", operation="x")
    assert sleeps == []  # no thread is held for an hour
    assert provider.calls == 1
    assert info.value.retry_after == 3600.0  # the job comes back then
    assert info.value.status_code == 429


# -- circuit breaker -------------------------------------------------------------------


def test_breaker_opens_fails_fast_half_opens_and_closes(
    make_client: Callable[..., OutboundClient], clock: FakeClock
) -> None:
    provider = Provider(503)
    client = make_client(
        provider, retry=RetryPolicy(max_attempts=1), breaker=BreakerPolicy(5, cooldown=30)
    )
    for _ in range(5):
        assert client.breaker_state() == "closed"
        with pytest.raises(ExternalServiceError):
            client.get("/v1/x", operation="x")
    assert client.breaker_state() == "open"

    with pytest.raises(CircuitOpenError) as info:
        client.get("/v1/x", operation="x")
    assert provider.calls == 5  # failed fast: the transport was not touched
    assert info.value.retry_after == 30.0
    assert not info.value.consumes_attempt
    clock.advance(timedelta(seconds=12))
    with pytest.raises(CircuitOpenError) as info:
        client.get("/v1/x", operation="x")
    assert info.value.retry_after == 18.0

    clock.advance(timedelta(seconds=18))
    assert client.breaker_state() == "half_open"
    with pytest.raises(ExternalServiceError):  # the trial fails: open again
        client.get("/v1/x", operation="x")
    assert provider.calls == 6
    assert client.breaker_state() == "open"

    clock.advance(timedelta(seconds=30))
    provider.script(200)
    assert client.get("/v1/x", operation="x").status_code == 200  # the trial succeeds
    assert client.breaker_state() == "closed"
    assert client.get("/v1/x", operation="x").status_code == 200


def test_breaker_is_per_clinic_and_integration(
    make_client: Callable[..., OutboundClient], clock: FakeClock
) -> None:
    registry = BreakerRegistry()
    options: dict[str, Any] = {
        "breakers": registry,
        "retry": RetryPolicy(max_attempts=1),
        "breaker": BreakerPolicy(failure_threshold=2),
    }
    down = Provider(503)
    maple = make_client(down, tenant_id="ten_maple", **options)
    for _ in range(2):
        with pytest.raises(ExternalServiceError):
            maple.get("/v1/x", operation="x")
    with pytest.raises(CircuitOpenError):
        maple.get("/v1/x", operation="x")

    up = Provider(200)
    birch = make_client(up, tenant_id="ten_birch", **options)
    maple_sms = make_client(up, tenant_id="ten_maple", integration="sms", **options)
    assert birch.get("/v1/x", operation="x").status_code == 200
    assert maple_sms.get("/v1/x", operation="x").status_code == 200
    now = clock.now()
    assert breaker_state("ten_maple", "acme", now=now, registry=registry) == "open"
    assert breaker_state("ten_birch", "acme", now=now, registry=registry) == "closed"
    assert breaker_state("ten_maple", "sms", now=now, registry=registry) == "closed"
    assert breaker_state("ten_other", "acme", now=now, registry=registry) == "closed"


def test_breaker_state_reads_the_process_registry_by_default(
    make_client: Callable[..., OutboundClient], clock: FakeClock
) -> None:
    tenant = new_id("ten")
    client = make_client(
        Provider(httpx.ConnectError("refused")),
        tenant_id=tenant,
        breakers=None,
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=1),
    )
    with pytest.raises(ExternalServiceError):
        client.get("/v1/x", operation="x")
    assert breaker_state(tenant, "acme", now=clock.now()) == "open"
    assert breaker_state(tenant, "acme", now=clock.now() + timedelta(seconds=30)) == "half_open"


def test_breaker_opening_during_retries_reports_the_real_failure(
    make_client: Callable[..., OutboundClient],
) -> None:
    provider = Provider(503)
    client = make_client(
        provider, retry=RetryPolicy(max_attempts=5), breaker=BreakerPolicy(failure_threshold=2)
    )
    with pytest.raises(ExternalServiceError) as info:
        client.get("/v1/x", operation="x")
    assert type(info.value) is ExternalServiceError  # it did go out and fail: an attempt
    assert info.value.status_code == 503
    assert info.value.retry_after == 30.0
    assert provider.calls == 2


# -- rate limits -----------------------------------------------------------------------


def test_bucket_is_shared_through_the_database(
    make_client: Callable[..., OutboundClient], database_url: str, clock: FakeClock
) -> None:
    other_process = create_database(database_url)
    try:
        limit = RateLimit(rate=5, burst=5, max_wait=0)
        provider = Provider(200)
        first = make_client(provider, tenant_id="ten_maple", rate_limit=limit)
        second = make_client(provider, tenant_id="ten_maple", rate_limit=limit, db=other_process)
        for _ in range(3):
            first.get("/v1/x", operation="x")
        for _ in range(2):
            second.get("/v1/x", operation="x")
        for client in (first, second):
            with pytest.raises(RateLimitedError) as info:
                client.get("/v1/x", operation="x")
            assert info.value.retry_after == pytest.approx(0.2, abs=0.002)
            assert not info.value.consumes_attempt
        assert provider.calls == 5

        birch = make_client(provider, tenant_id="ten_birch", rate_limit=limit)
        birch.get("/v1/x", operation="x")  # another clinic has its own bucket
        clock.advance(timedelta(milliseconds=200))
        second.get("/v1/x", operation="x")
        with pytest.raises(RateLimitedError):
            first.get("/v1/x", operation="x")
        assert provider.calls == 7
    finally:
        other_process.dispose()


def test_callers_wait_their_turn_up_to_max_wait(
    make_client: Callable[..., OutboundClient], sleeps: Sleeps
) -> None:
    provider = Provider(200)
    client = make_client(provider, rate_limit=RateLimit(rate=5, burst=2, max_wait=1.0))
    for _ in range(4):
        client.get("/v1/x", operation="x")
    assert sleeps == pytest.approx([0.2, 0.4], abs=0.002)  # a queue: each takes a future token
    with pytest.raises(RateLimitedError) as info:
        client.get("/v1/x", operation="x", max_wait=0.5)  # would need 0.6 s
    assert info.value.retry_after == pytest.approx(0.6, abs=0.002)
    client.get("/v1/x", operation="x")  # the refused call took nothing
    assert sleeps[-1] == pytest.approx(0.6, abs=0.002)
    assert provider.calls == 5


def test_a_retry_refused_by_the_rate_limit_reports_the_real_failure(
    make_client: Callable[..., OutboundClient],
) -> None:
    provider = Provider(503, 200)
    client = make_client(provider, rate_limit=RateLimit(rate=5, burst=1, max_wait=0))
    with pytest.raises(ExternalServiceError) as info:
        client.get("/v1/x", operation="x")
    assert type(info.value) is ExternalServiceError  # it went out once: an attempt
    assert info.value.status_code == 503
    assert info.value.retry_after == pytest.approx(0.2, abs=0.002)
    assert provider.calls == 1


def test_rate_limit_holds_across_threads_and_processes(database_url: str) -> None:
    rate, burst, calls_per_thread = 5.0, 5, 10
    stamps: list[float] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            stamps.append(time.monotonic())
        return httpx.Response(200)

    errors: list[BaseException] = []
    tenant = new_id("ten")

    def process() -> None:
        db = create_database(database_url)  # its own engine and pool, as another process has
        try:
            with OutboundClient(
                db,
                tenant_id=tenant,
                integration="acme",
                base_url="https://api.acme.test",
                clock=SystemClock(),
                transport=httpx.MockTransport(handler),
                rate_limit=RateLimit(rate=rate, burst=burst, max_wait=10),
                breakers=BreakerRegistry(),
            ) as client:
                for _ in range(calls_per_thread):
                    client.get("/v1/x", operation="x")
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    stamps.sort()
    assert len(stamps) == 2 * calls_per_thread
    slack = 0.05  # the stamp is taken a little after the token
    # Over any 1 s window: at most the burst plus one second of refill.
    for i, start in enumerate(stamps):
        in_window = sum(1 for t in stamps[i:] if t < start + 1.0 - slack)
        assert in_window <= burst + rate, (i, in_window)
    # The exact token-bucket envelope: call k (from 0) waits for token k - burst + 1.
    for k in range(burst, len(stamps)):
        assert stamps[k] - stamps[0] >= (k - burst + 1) / rate - slack, k


# -- call log ----------------------------------------------------------------------------


SECRET = "sk_live_51HxTOPSECRETvalue"
QUERY_SECRET = "qs_SECRET_api_key_123"
BODY_SECRET = "patient-Jane-Doe-1970-01-01"
RECORDS_PATH = "/v1/records/jane-doe"


def _all_text(rows: list[HttpCall]) -> str:
    return json.dumps(
        [{c.name: getattr(r, c.name) for c in HttpCall.__table__.columns} for r in rows],
        default=str,
    )


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the JSON line production would print, fields included."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_one_call_log_row_per_call(
    make_client: Callable[..., OutboundClient], db: Database, clock: FakeClock
) -> None:
    provider = Provider(503, 503, 200)
    client = make_client(provider, tenant_id="ten_maple")
    client.get("/v1/patients/42", operation="patients.get", params={"q": "x"})
    client.get("/v1/patients/43", operation="patients.list")  # the last reply repeats: 200
    [first, second] = sorted(call_rows(db), key=lambda r: r.operation)
    assert first.tenant_id == "ten_maple"
    assert (first.integration, first.operation, first.method) == ("acme", "patients.get", "GET")
    assert first.host == "api.acme.test"
    assert (first.status, first.success, first.error_class, first.attempt) == (200, True, None, 3)
    assert first.duration_ms >= 0
    assert first.created_at == clock.now()
    assert second.attempt == 1


def test_call_log_has_no_secrets_bodies_or_query_strings(
    make_client: Callable[..., OutboundClient], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = Provider(
        httpx.Response(401, json={"error": "bad key " + SECRET}),
        httpx.Response(503, text=BODY_SECRET, headers={"X-Echo": SECRET}),
    )
    client = make_client(
        provider,
        headers={"Authorization": f"Bearer {SECRET}"},
        retry=RetryPolicy(max_attempts=2),
    )
    for _ in range(2):
        with contextlib.suppress(ExternalServiceError):
            client.post(
                f"/v1/patients/{BODY_SECRET}/notes",
                operation="notes.create",
                params={"api_key": QUERY_SECRET},
                json={"note": BODY_SECRET},
                idempotency_key="k",
            )
    assert provider.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    rows = call_rows(db)
    assert sorted((r.status, r.success, r.error_class) for r in rows) == [
        (401, False, "HTTPStatusError"),
        (503, False, "HTTPStatusError"),
    ]
    text = _all_text(rows) + _logged(caplog)
    assert "notes.create" in text
    for leak in (SECRET, QUERY_SECRET, BODY_SECRET, "api_key", "/v1/patients", "Bearer"):
        assert leak not in text


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), 503, 500])
def test_a_secret_in_authorization_never_leaks_into_errors(
    make_client: Callable[..., OutboundClient],
    db: Database,
    caplog: pytest.LogCaptureFixture,
    failure: Reply,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(
        Provider(failure),
        headers={"Authorization": f"Bearer {SECRET}"},
        retry=RetryPolicy(max_attempts=2),
    )
    with pytest.raises(ExternalServiceError) as info:
        client.get(RECORDS_PATH, operation="records.list", params={"token": QUERY_SECRET})
    exc = info.value
    shown = " ".join(
        [str(exc), repr(exc), exc.detail, repr(exc.args), repr(vars(exc)), _logged(caplog)]
    )
    shown += "".join(traceback.format_exception(exc)) + _all_text(call_rows(db))
    for leak in (SECRET, QUERY_SECRET, RECORDS_PATH, "?token"):
        assert leak not in shown
    assert "acme records.list: GET api.acme.test" in str(exc)


def test_a_lost_call_log_row_does_not_fail_the_call(
    make_client: Callable[..., OutboundClient], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with db.write() as session:  # the call log is gone (a throwaway test database)
        session.execute(sa.text("DROP TABLE http_calls"))
    provider = Provider(201)
    response = make_client(provider).post("/v1/charges", operation="charges.create")
    assert response.status_code == 201  # a charge that went through must not look failed
    assert "call log write failed" in caplog.text


def test_summary_for_the_health_view(
    make_client: Callable[..., OutboundClient], db: Database, clock: FakeClock
) -> None:
    provider = Provider(200)
    client = make_client(provider, tenant_id="ten_maple", retry=RetryPolicy(max_attempts=1))
    start = clock.now()
    for _ in range(18):
        client.get("/v1/x", operation="x")
    clock.advance(timedelta(minutes=5))
    provider.script(500)
    for _ in range(2):
        with pytest.raises(ExternalServiceError):
            client.get("/v1/x", operation="x")
    make_client(Provider(200), tenant_id="ten_birch").get("/v1/x", operation="x")
    with db.write() as session:  # known durations for the percentile
        ids = list(session.scalars(sa.select(HttpCall.id).where(HttpCall.tenant_id == "ten_maple")))
        for n, call_id in enumerate(sorted(ids), start=1):
            session.execute(
                sa.update(HttpCall).where(HttpCall.id == call_id).values(duration_ms=n * 10.0)
            )

    summary = summarize(db, "ten_maple", "acme", now=clock.now())
    assert (summary.calls, summary.failures) == (20, 2)
    assert summary.error_rate == pytest.approx(0.1)
    assert summary.p95_ms == 190.0  # nearest rank: the 19th of 20
    assert summary.last_success_at == start
    assert summary.last_failure_at == clock.now()

    later = summarize(db, "ten_maple", "acme", now=clock.now() + timedelta(days=2))
    assert (later.calls, later.error_rate, later.p95_ms) == (0, None, None)
    assert later.last_success_at == start  # "last" looks past the window
    empty = summarize(db, "ten_nobody", "acme", now=clock.now())
    assert (empty.calls, empty.last_success_at, empty.last_failure_at) == (0, None, None)


def test_call_log_is_purged_after_30_days(
    make_client: Callable[..., OutboundClient], db: Database, clock: FakeClock
) -> None:
    client = make_client(Provider(200))
    client.get("/v1/x", operation="old")
    clock.advance(timedelta(days=20))
    client.get("/v1/x", operation="new")
    assert purge_expired(db, clock.now()) == 0
    clock.advance(timedelta(days=10, seconds=1))
    assert purge_expired(db, clock.now()) == 1
    assert [r.operation for r in call_rows(db)] == ["new"]


def test_worker_housekeeping_purges_the_call_log(
    make_client: Callable[..., OutboundClient], db: Database, clock: FakeClock
) -> None:
    make_client(Provider(200)).get("/v1/x", operation="old")
    clock.advance(timedelta(days=31))
    Worker(db, clock).housekeeping()
    assert call_rows(db) == []


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; the paths it served."""
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = self_signed_server_context(tmp_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_certificates_are_verified_by_every_client(
    db: Database, https_server: tuple[str, list[str]]
) -> None:
    """The TLS context the clients share still verifies: an untrusted certificate fails
    the call before any request is sent, for the first client and the next ones."""
    url, served = https_server
    for _ in range(2):
        with (
            OutboundClient(
                db,
                tenant_id=new_id("ten"),
                integration="acme",
                base_url=url,
                retry=RetryPolicy(max_attempts=1),
                breakers=BreakerRegistry(),
            ) as client,
            pytest.raises(ExternalServiceError),
        ):
            client.request("GET", "/v1/ping", operation="ping")
    assert served == []
