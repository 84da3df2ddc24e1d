"""Outbound webhooks: endpoints, publishing, signed deliveries to a real receiver, retries,
auto-disable, alerts, SSRF refusals and manual redelivery.

The receiver is a real HTTP server on 127.0.0.1 (allow-listed through settings);
signatures are checked with the ``standardwebhooks`` package as the oracle.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.errors import PermanentJobError, RetryAfter
from clinicbridge.db.engine import Database
from clinicbridge.http import BreakerRegistry
from clinicbridge.integrations.models import Alert
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, JobRegistry
from clinicbridge.jobs.retry import fixed
from clinicbridge.jobs.worker import Worker, WorkerConfig
from clinicbridge.settings import Settings, load_settings
from clinicbridge.webhooks import delivery as wd
from clinicbridge.webhooks import outbound, signing
from clinicbridge.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from clinicbridge.webhooks.ssrf import AllowList, check_url, is_forbidden
from tests.conftest import Clinic, add_key

ALLOW = "127.0.0.1/32"
BODY_MARKER = "RECEIVER-BODY-d41d8cd9"  # what the receiver answers: must never be stored


# -- the receiver -----------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A clinic's system: records requests, answers as told (200 when not told)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        for s in statuses:
            self.answers.append(s if isinstance(s, tuple) else (s, {}))

    def next_answer(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            return self.answers.popleft() if self.answers else (200, {})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.requests.append(Received(self.path, headers, body))
            status, extra = state.next_answer()
            reply = BODY_MARKER.encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/clinic"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- fixtures and helpers ---------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The app's settings: the local receiver is allow-listed."""
    return load_settings(
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        webhook_allowlist=ALLOW,
    )


@pytest.fixture
def make_client(settings: Settings, db: Database) -> Iterator[Callable[[str], TestClient]]:
    """Another app on the same database and key file, with another allow-list."""
    opened: list[TestClient] = []

    def factory(allowlist: str) -> TestClient:
        other = settings.model_copy(update={"webhook_allowlist": allowlist})
        test_client = TestClient(create_app(other, db=db), raise_server_exceptions=False)
        opened.append(test_client.__enter__())
        return test_client

    yield factory
    for test_client in opened:
        test_client.__exit__(None, None, None)


@pytest.fixture
def deliverer(settings: Settings) -> wd.Deliverer:
    return wd.Deliverer(settings, breakers=BreakerRegistry())


def create_endpoint(
    client: TestClient, clinic: Clinic, url: str, events: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    body = {"url": url, "event_types": events or ["*"], **kw}
    response = client.post("/api/v1/webhook-endpoints", headers=clinic.headers, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def publish(db: Database, tenant_id: str, event_type: str, data: dict[str, Any]) -> list[str]:
    """Publish and return the new deliveries' ids."""
    with db.write() as session:
        before = set(session.scalars(sa.select(WebhookDelivery.id)))
        outbound.publish(
            session, tenant_id=tenant_id, event_type=event_type, data=data, now=SystemClock().now()
        )
        after = set(session.scalars(sa.select(WebhookDelivery.id)))
    return sorted(after - before)


def run(
    db: Database,
    deliverer: wd.Deliverer,
    delivery_id: str,
    *,
    attempt: int = 1,
    max_attempts: int = 12,
) -> None:
    """Run the handler once, as the worker would."""
    deliverer(
        JobContext(
            job_id="job_test",
            kind=outbound.KIND,
            tenant_id=None,
            payload={"delivery_id": delivery_id},
            attempt=attempt,
            max_attempts=max_attempts,
            db=db,
            now=SystemClock().now,
        )
    )


def get(db: Database, model: type[Any], row_id: str) -> Any:
    with db.read() as session:
        row = session.get(model, row_id)
        assert row is not None
        session.expunge(row)
        return row


def attempts(db: Database, delivery_id: str) -> list[WebhookDeliveryAttempt]:
    with db.read() as session:
        rows = list(
            session.scalars(
                sa.select(WebhookDeliveryAttempt)
                .where(WebhookDeliveryAttempt.delivery_id == delivery_id)
                .order_by(WebhookDeliveryAttempt.attempted_at)
            )
        )
        session.expunge_all()
        return rows


def alerts(db: Database, endpoint_id: str) -> list[Alert]:
    with db.read() as session:
        rows = list(session.scalars(sa.select(Alert).where(Alert.subject_id == endpoint_id)))
        session.expunge_all()
        return rows


def set_failing_since(db: Database, endpoint_id: str, when: datetime) -> None:
    with db.write() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        endpoint.failing_since = when


def verify(secret: str, request: Received) -> Any:
    """The oracle: the standardwebhooks package's own verification."""
    return Webhook(secret).verify(request.body, request.headers)


@pytest.fixture
def start_worker(db: Database, settings: Settings) -> Iterator[Callable[[wd.Deliverer], None]]:
    """A real worker (with the app's settings) running only our handler, backoff 0."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(deliverer: wd.Deliverer) -> None:
        jobs = JobRegistry()
        wd.register(jobs, deliverer, backoff=fixed(timedelta(0)))
        config = WorkerConfig(heartbeat_seconds=0.2, shutdown_timeout=2)
        worker = Worker(db, SystemClock(), jobs=jobs, config=config, settings=settings)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(10)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def delivery_status(db: Database, delivery_id: str) -> str:
    return str(get(db, WebhookDelivery, delivery_id).status)


# -- endpoints: CRUD, permissions, tenancy, validation ----------------------------


def test_endpoint_crud_secret_shown_once_and_sealed(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver
) -> None:
    h = clinic.headers
    created = create_endpoint(
        client, clinic, receiver.url, ["booking.created", "payment.*"], description="PMS"
    )
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(signing.secret_key(secret)) == 24
    assert created["enabled"] is True and created["failing_since"] is None
    stored = get(db, WebhookEndpoint, created["id"])
    assert secret not in stored.secret and "whsec_" not in stored.secret  # vault-sealed

    got = client.get(f"/api/v1/webhook-endpoints/{created['id']}", headers=h)
    assert got.status_code == 200 and "secret" not in got.json()
    listed = client.get("/api/v1/webhook-endpoints", headers=h).json()
    assert [e["id"] for e in listed["data"]] == [created["id"]]
    assert "secret" not in listed["data"][0]

    patched = client.patch(
        f"/api/v1/webhook-endpoints/{created['id']}",
        headers=h,
        json={"event_types": ["*"], "description": "PMS (new)"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["*"]
    assert client.delete(f"/api/v1/webhook-endpoints/{created['id']}", headers=h).status_code == 204
    assert client.get(f"/api/v1/webhook-endpoints/{created['id']}", headers=h).status_code == 404

    with db.read() as session:
        events = list(
            session.scalars(
                sa.select(AuditEvent)
                .where(AuditEvent.resource_id == created["id"])
                .order_by(AuditEvent.seq)
            )
        )
        actions = [e.action for e in events]
        text = json.dumps([e.diff for e in events])
    assert actions == [
        "webhook_endpoint.create",
        "webhook_endpoint.update",
        "webhook_endpoint.delete",
    ]
    assert secret not in text and secret[6:] not in text
    assert events[0].diff is not None and events[0].diff["secret"] == {"new": "**********"}


def test_a_given_secret_is_used_and_checked(
    client: TestClient, clinic: Clinic, receiver: Receiver
) -> None:
    mine = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # 26 bytes
    created = create_endpoint(client, clinic, receiver.url, secret=mine)
    assert created["secret"] == mine
    for bad in ("sk_live_nope", "whsec_!!!", "whsec_QUJD"):
        response = client.post(
            "/api/v1/webhook-endpoints",
            headers=clinic.headers,
            json={"url": receiver.url, "event_types": ["*"], "secret": bad},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "secret"
        assert bad not in response.text


def test_bad_input_names_the_field(client: TestClient, clinic: Clinic, receiver: Receiver) -> None:
    cases = [
        ({"url": receiver.url, "event_types": []}, "event_types"),
        ({"url": receiver.url, "event_types": ["Booking Created"]}, "event_types.0"),
        ({"url": receiver.url, "event_types": ["*"], "colour": "red"}, "colour"),
        ({"url": "ftp://files.example.com/x", "event_types": ["*"]}, "url"),
        ({"url": "not a url", "event_types": ["*"]}, "url"),
    ]
    for body, name in cases:
        response = client.post("/api/v1/webhook-endpoints", headers=clinic.headers, json=body)
        assert response.status_code == 422, body
        assert [e["field"] for e in response.json()["errors"]] == [name]


def test_permissions_and_tenant_isolation(
    client: TestClient,
    clinic: Clinic,
    make_clinic: Callable[..., Clinic],
    db: Database,
    receiver: Receiver,
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {"booking_id": "bkg_1"})
    path = f"/api/v1/webhook-endpoints/{endpoint['id']}"

    auditor = add_key(db, clinic, "auditor")  # webhooks:read only
    assert client.get(path, headers=auditor.headers).status_code == 200
    assert client.get(path + "/deliveries", headers=auditor.headers).status_code == 200
    denied = client.patch(path, headers=auditor.headers, json={"enabled": False})
    assert denied.status_code == 403 and denied.json()["permission"] == "webhooks:manage"
    front_desk = add_key(db, clinic, "front_desk")  # neither
    assert client.get(path, headers=front_desk.headers).status_code == 403

    other = make_clinic("Other Clinic")
    for method, url in [
        ("GET", path),
        ("PATCH", path),
        ("DELETE", path),
        ("GET", path + "/deliveries"),
        ("POST", path + "/test"),
        ("GET", f"/api/v1/webhook-deliveries/{delivery_id}"),
        ("POST", f"/api/v1/webhook-deliveries/{delivery_id}/redeliver"),
    ]:
        body = {"description": "x"} if method == "PATCH" else None
        response = client.request(method, url, headers=other.headers, json=body)
        assert response.status_code == 404, (method, url)
    assert client.get("/api/v1/webhook-endpoints", headers=other.headers).json()["data"] == []
    assert get(db, WebhookEndpoint, endpoint["id"]).description == ""


# -- publishing --------------------------------------------------------------------


def test_publish_reaches_only_subscribed_enabled_endpoints(
    client: TestClient, clinic: Clinic, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    url = "https://93.184.215.14/hooks"  # a public address: no DNS needed
    exact = create_endpoint(client, clinic, url, ["booking.created"])
    prefix = create_endpoint(client, clinic, url, ["booking.*"])
    everything = create_endpoint(client, clinic, url, ["*"])
    create_endpoint(client, clinic, url, ["payment.succeeded", "bookings.*"])
    create_endpoint(client, clinic, url, ["booking.created"], enabled=False)
    other = make_clinic("Other Clinic")
    create_endpoint(client, other, url, ["*"])

    ids = publish(db, clinic.id, "booking.created", {"booking_id": "bkg_1"})
    with db.read() as session:
        rows = [session.get(WebhookDelivery, i) for i in ids]
        jobs = list(session.scalars(sa.select(Job).where(Job.kind == outbound.KIND)))
    assert {r.endpoint_id for r in rows if r} == {exact["id"], prefix["id"], everything["id"]}
    assert len({r.message_id for r in rows if r}) == 1  # one message, one webhook-id
    assert {j.dedupe_key for j in jobs} == set(ids)
    assert all(
        j.tenant_id == clinic.id and j.payload == {"delivery_id": j.dedupe_key} for j in jobs
    )
    first = rows[0]
    assert first is not None and first.payload["type"] == "booking.created"
    assert first.payload["data"] == {"booking_id": "bkg_1"}
    assert first.payload["timestamp"].endswith("Z")

    assert len(publish(db, clinic.id, "message.delivered", {})) == 1  # only "*"


def test_publish_commits_or_rolls_back_with_the_caller(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    create_endpoint(client, clinic, "https://93.184.215.14/hooks")
    with pytest.raises(RuntimeError), db.write() as session:
        count = outbound.publish(
            session,
            tenant_id=clinic.id,
            event_type="booking.created",
            data={},
            now=SystemClock().now(),
        )
        assert count == 1
        raise RuntimeError("the business write failed")
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_subscription_patterns() -> None:
    assert outbound.matches(["booking.*"], "booking.created")
    assert outbound.matches(["booking.*"], "booking.reminder.sent")
    assert not outbound.matches(["booking.*"], "bookings.created")
    assert not outbound.matches(["booking.*"], "booking")
    assert outbound.matches(["*"], "integration.unhealthy")
    assert not outbound.matches(["booking.created"], "booking.cancelled")


# -- delivery: signatures, retries, 410, Retry-After, failing endpoints -------------


def test_delivery_is_signed_per_standard_webhooks(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    receiver: Receiver,
    start_worker: Callable[[wd.Deliverer], None],
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url, ["booking.created"])
    data = {"booking_id": "bkg_1", "starts_at": datetime(2026, 3, 8, 14, 30, tzinfo=UTC)}
    (delivery_id,) = publish(db, clinic.id, "booking.created", data)
    start_worker(wd.Deliverer(breakers=BreakerRegistry()))  # the worker's settings
    wait_for(lambda: delivery_status(db, delivery_id) == "delivered")

    (request,) = receiver.requests
    assert request.path == "/hooks/clinic"
    assert request.headers["content-type"] == "application/json"
    payload = verify(endpoint["secret"], request)
    assert payload["type"] == "booking.created"
    assert payload["data"] == {"booking_id": "bkg_1", "starts_at": "2026-03-08T14:30:00+00:00"}
    delivery = get(db, WebhookDelivery, delivery_id)
    assert request.headers["webhook-id"] == delivery.message_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert delivery.delivered_at is not None and delivery.last_status_code == 200
    (attempt,) = attempts(db, delivery_id)
    assert attempt.success and attempt.status_code == 200 and attempt.duration_ms > 0


def test_our_signature_equals_the_oracles() -> None:
    secret = signing.generate_secret().reveal()
    body = signing.encode_body({"type": "x.y", "timestamp": "2026-01-05T09:00:00Z", "data": {}})
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ours = signing.sign(secret, "msg_1", int(at.timestamp()), body)
    assert ours == Webhook(secret).sign("msg_1", at, body.decode())


def test_retry_after_500_keeps_the_webhook_id(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    receiver: Receiver,
    deliverer: wd.Deliverer,
    start_worker: Callable[[wd.Deliverer], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    receiver.answer(500, 503)
    (delivery_id,) = publish(db, clinic.id, "payment.succeeded", {"amount": 4500})
    with caplog.at_level(logging.DEBUG):
        start_worker(deliverer)
        wait_for(lambda: delivery_status(db, delivery_id) == "delivered")

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert all(verify(endpoint["secret"], r)["data"] == {"amount": 4500} for r in receiver.requests)
    listed = client.get(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=clinic.headers
    ).json()
    (out,) = listed["data"]
    assert out["status"] == "delivered" and out["attempts"] == 3
    assert [a["status_code"] for a in out["attempt_log"]] == [500, 503, 200]
    assert [a["success"] for a in out["attempt_log"]] == [False, False, True]
    assert all(a["duration_ms"] > 0 and a["attempted_at"] for a in out["attempt_log"])
    assert "payload" not in out
    assert get(db, WebhookEndpoint, endpoint["id"]).failing_since is None  # success cleared it
    # Neither the secret nor what the receiver answered is kept anywhere.
    with db.read() as session:
        rows = json.dumps(
            [list(r) for r in session.execute(sa.select(WebhookDeliveryAttempt.__table__))],
            default=str,
        )
        job_errors = [j.last_error or "" for j in session.scalars(sa.select(Job))]
    for text in (rows, caplog.text, *job_errors, json.dumps(listed)):
        assert BODY_MARKER not in text and endpoint["secret"] not in text


def test_a_failure_marks_the_endpoint_failing_and_raises_to_retry(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    receiver.answer(500)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(wd.DeliveryFailedError) as raised:
        run(db, deliverer, delivery_id)
    assert raised.value.retryable and raised.value.retry_after is None  # worker's backoff
    assert "HTTP 500" in raised.value.detail and BODY_MARKER not in raised.value.detail
    assert delivery_status(db, delivery_id) == "retrying"
    assert get(db, WebhookEndpoint, endpoint["id"]).failing_since is not None


def test_410_disables_the_endpoint_at_once_with_an_alert(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    receiver.answer(410)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(PermanentJobError):
        run(db, deliverer, delivery_id)

    stored = get(db, WebhookEndpoint, endpoint["id"])
    assert stored.enabled is False and "410" in (stored.disabled_reason or "")
    assert delivery_status(db, delivery_id) == "dead"
    (alert,) = alerts(db, endpoint["id"])
    assert (alert.rule, alert.status, alert.subject_type) == (
        "endpoint_gone",
        "open",
        "webhook_endpoint",
    )
    assert publish(db, clinic.id, "booking.created", {}) == []  # disabled: nothing queued
    with db.read() as session:
        actions = list(
            session.scalars(
                sa.select(AuditEvent.action).where(AuditEvent.resource_id == endpoint["id"])
            )
        )
    assert "webhook_endpoint.disable" in actions

    enabled = client.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}",
        headers=clinic.headers,
        json={"enabled": True},
    )
    assert enabled.status_code == 200
    assert enabled.json()["disabled_reason"] is None and enabled.json()["failing_since"] is None
    (alert,) = alerts(db, endpoint["id"])
    assert alert.status == "resolved" and alert.resolved_at is not None


def test_retry_after_is_honoured(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    create_endpoint(client, clinic, receiver.url)
    receiver.answer((429, {"Retry-After": "120"}), (503, {"Retry-After": "7"}))
    (first,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(RetryAfter) as raised:
        run(db, deliverer, first)
    assert raised.value.retry_after == 120
    with pytest.raises(RetryAfter) as raised:
        run(db, deliverer, first, attempt=2)
    assert raised.value.retry_after == 7
    assert [a.status_code for a in attempts(db, first)] == [429, 503]


def test_the_worker_reschedules_after_retry_after(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    receiver: Receiver,
    deliverer: wd.Deliverer,
    start_worker: Callable[[wd.Deliverer], None],
) -> None:
    """The job comes back after Retry-After, not after the backoff (0 here)."""
    create_endpoint(client, clinic, receiver.url)
    receiver.answer((429, {"Retry-After": "3600"}))
    (second,) = publish(db, clinic.id, "booking.updated", {})
    before = SystemClock().now()
    start_worker(deliverer)

    def rescheduled() -> bool:
        with db.read() as session:
            job = session.scalar(sa.select(Job).where(Job.dedupe_key == second))
            return job is not None and job.state == "failed"

    wait_for(rescheduled)
    with db.read() as session:
        job = session.scalar(sa.select(Job).where(Job.dedupe_key == second))
        assert job is not None
        assert timedelta(minutes=59) < job.run_at - before < timedelta(minutes=61)


def test_an_endpoint_failing_for_five_days_is_disabled_with_an_alert(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    now = SystemClock().now()
    set_failing_since(db, endpoint["id"], now - timedelta(days=4, hours=23))
    receiver.answer(500, 500, 500)
    first, second, third = (publish(db, clinic.id, "booking.created", {})[0] for _ in range(3))
    with pytest.raises(wd.DeliveryFailedError):
        run(db, deliverer, first)  # 4 days 23 hours: still retrying
    assert get(db, WebhookEndpoint, endpoint["id"]).enabled is True

    set_failing_since(db, endpoint["id"], now - timedelta(days=5, minutes=1))
    with pytest.raises(PermanentJobError):
        run(db, deliverer, second)
    stored = get(db, WebhookEndpoint, endpoint["id"])
    assert stored.enabled is False and stored.disabled_reason == "failing for 5 days"
    assert delivery_status(db, second) == "dead"
    (alert,) = alerts(db, endpoint["id"])
    assert alert.rule == "endpoint_failing" and alert.status == "open"
    assert alert.details["last_status_code"] == 500

    run(db, deliverer, third)  # the endpoint is disabled: stops quietly, sends nothing
    assert len(receiver.requests) == 2
    assert delivery_status(db, third) == "cancelled"
    assert len(alerts(db, endpoint["id"])) == 1  # no alert storm


def test_success_clears_failing_since_and_resolves_alerts(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    set_failing_since(db, endpoint["id"], SystemClock().now() - timedelta(days=2))
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    run(db, deliverer, delivery_id)
    assert get(db, WebhookEndpoint, endpoint["id"]).failing_since is None
    assert delivery_status(db, delivery_id) == "delivered"


def test_the_last_attempt_gives_the_delivery_up(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    create_endpoint(client, clinic, receiver.url)
    receiver.answer(502)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(PermanentJobError):
        run(db, deliverer, delivery_id, attempt=12, max_attempts=12)
    assert delivery_status(db, delivery_id) == "dead"


def test_transport_failures_are_recorded_by_class(
    client: TestClient, clinic: Clinic, db: Database, deliverer: wd.Deliverer
) -> None:
    from tests.conftest import free_port

    create_endpoint(client, clinic, f"http://127.0.0.1:{free_port()}/closed")
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(wd.DeliveryFailedError):
        run(db, deliverer, delivery_id)
    (attempt,) = attempts(db, delivery_id)
    assert attempt.status_code is None and attempt.error == "ConnectError"


# -- SSRF ------------------------------------------------------------------------------

FORBIDDEN_URLS = [
    "https://127.0.0.1/hooks",
    "https://10.0.0.1/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hooks",
    "https://[fd00:ec2::254]/latest",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://100.64.0.1/hooks",
    "https://0.0.0.0/hooks",
    "https://localhost/hooks",  # a name that resolves to 127.0.0.1
]


def test_forbidden_destinations_are_refused_at_create_time(
    make_client: Callable[[str], TestClient], clinic: Clinic, receiver: Receiver
) -> None:
    strict = make_client("")
    refused = [
        *FORBIDDEN_URLS,
        "http://93.184.215.14/hooks",  # public, but not https
        "https://user:pw@93.184.215.14/hooks",
        receiver.url,
    ]
    for url in refused:
        response = strict.post(
            "/api/v1/webhook-endpoints",
            headers=clinic.headers,
            json={"url": url, "event_types": ["*"]},
        )
        assert response.status_code == 422, url
        (error,) = response.json()["errors"]
        assert error["field"] == "url" and error["code"] == "forbidden_destination", url
        assert url not in response.text
    unresolvable = strict.post(
        "/api/v1/webhook-endpoints",
        headers=clinic.headers,
        json={"url": "https://no-such-host.invalid/hooks", "event_types": ["*"]},
    )
    assert unresolvable.status_code == 422
    assert unresolvable.json()["errors"][0]["code"] == "unresolvable_host"
    created = create_endpoint(strict, clinic, "https://93.184.215.14/hooks")
    patched = strict.patch(
        f"/api/v1/webhook-endpoints/{created['id']}",
        headers=clinic.headers,
        json={"url": "https://169.254.169.254/"},
    )
    assert patched.status_code == 422 and patched.json()["errors"][0]["field"] == "url"


def test_the_allow_list_lets_them_through(
    make_client: Callable[[str], TestClient], clinic: Clinic
) -> None:
    permissive = make_client("127.0.0.0/8,::1,10.0.0.0/8,169.254.169.254,fd00::/8,localhost")
    for url in [*FORBIDDEN_URLS[:6], FORBIDDEN_URLS[-1], "http://localhost:8080/hooks"]:
        create_endpoint(permissive, clinic, url)
    assert (
        permissive.post(
            "/api/v1/webhook-endpoints",
            headers=clinic.headers,
            json={"url": "http://10.0.0.1/hooks", "event_types": ["*"]},
        ).status_code
        == 201
    )  # http for an allow-listed network too


def test_forbidden_destinations_are_refused_at_delivery_time(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, settings: Settings
) -> None:
    create_endpoint(client, clinic, receiver.url)  # allowed when created
    strict = wd.Deliverer(
        settings.model_copy(update={"webhook_allowlist": ""}), breakers=BreakerRegistry()
    )
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(PermanentJobError):
        run(db, strict, delivery_id)
    assert receiver.requests == []
    (attempt,) = attempts(db, delivery_id)
    assert attempt.error == "ForbiddenDestination" and attempt.status_code is None
    assert delivery_status(db, delivery_id) == "dead"


def test_a_host_that_now_resolves_inside_is_refused(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, receiver: Receiver
) -> None:
    """DNS changed after creation: both the lookup and the connection are checked."""
    port = receiver.url.split(":")[2].split("/")[0]
    allow = settings.model_copy(update={"webhook_allowlist": ""})
    create_endpoint(client, clinic, f"https://93.184.215.14:{port}/hooks")
    with db.write() as session:  # as if its DNS record had changed
        endpoint = session.scalars(sa.select(WebhookEndpoint)).one()
        endpoint.url = f"https://clinic-pms.example:{port}/hooks"

    rebinding = wd.Deliverer(
        allow, resolve=lambda host, port: ["127.0.0.1"], breakers=BreakerRegistry()
    )
    (first,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(PermanentJobError):
        run(db, rebinding, first)

    # The lookup says public, the connection lands on loopback: refused after connect.
    with db.write() as session:
        session.scalars(sa.select(WebhookEndpoint)).one().url = f"https://localhost:{port}/x"
    lying = wd.Deliverer(
        allow, resolve=lambda host, port: ["93.184.215.14"], breakers=BreakerRegistry()
    )
    (second,) = publish(db, clinic.id, "booking.created", {})
    with pytest.raises(PermanentJobError):
        run(db, lying, second)
    assert receiver.requests == []
    assert [a.error for a in attempts(db, first) + attempts(db, second)] == [
        "ForbiddenDestination",
        "ForbiddenDestination",
    ]


def test_address_rules() -> None:
    forbidden = "127.0.0.1 10.1.2.3 172.16.0.1 192.168.1.1 169.254.169.254 ::1 fe80::1"
    forbidden += " fd00:ec2::254 ::ffff:10.0.0.1 224.0.0.1 0.0.0.0 100.64.0.1 240.0.0.1 ::"
    for text in forbidden.split():
        assert is_forbidden(ipaddress.ip_address(text)), text
    for text in ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"]:
        assert not is_forbidden(ipaddress.ip_address(text)), text
    allow = AllowList.parse("10.0.0.0/8, Hooks.Clinic.Example.")
    check_url("https://10.9.9.9/x", allow, lambda h, p: [])
    check_url("https://hooks.clinic.example/x", allow, lambda h, p: ["127.0.0.1"])


# -- redelivery and test events -------------------------------------------------------


def test_manual_redelivery_keeps_the_webhook_id(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {"booking_id": "bkg_1"})
    run(db, deliverer, delivery_id)
    response = client.post(
        f"/api/v1/webhook-deliveries/{delivery_id}/redeliver", headers=clinic.headers
    )
    assert response.status_code == 202 and response.json()["status"] == "pending"
    with db.read() as session:
        job = session.scalar(
            sa.select(Job).where(Job.dedupe_key == delivery_id, Job.state == "pending")
        )
        assert job is not None and job.attempts == 0
    run(db, deliverer, delivery_id)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verify(endpoint["secret"], second)
    got = client.get(f"/api/v1/webhook-deliveries/{delivery_id}", headers=clinic.headers).json()
    assert got["status"] == "delivered" and len(got["attempt_log"]) == 2

    client.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}",
        headers=clinic.headers,
        json={"enabled": False},
    )
    conflict = client.post(
        f"/api/v1/webhook-deliveries/{delivery_id}/redeliver", headers=clinic.headers
    )
    assert conflict.status_code == 409


def test_redelivery_of_a_waiting_delivery_runs_it_now(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    receiver: Receiver,
    deliverer: wd.Deliverer,
) -> None:
    create_endpoint(client, clinic, receiver.url)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    later = SystemClock().now() + timedelta(days=1)
    with db.write() as session:  # as after a failed attempt: waiting for the backoff
        job = session.scalars(sa.select(Job).where(Job.dedupe_key == delivery_id)).one()
        job.state, job.attempts, job.run_at = "failed", 3, later
    response = client.post(
        f"/api/v1/webhook-deliveries/{delivery_id}/redeliver", headers=clinic.headers
    )
    assert response.status_code == 202
    with db.read() as session:
        jobs = list(session.scalars(sa.select(Job).where(Job.dedupe_key == delivery_id)))
    assert len(jobs) == 1 and jobs[0].state == "pending" and jobs[0].run_at < later


def test_test_event_goes_to_that_endpoint_only(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url, ["payment.succeeded"])
    create_endpoint(client, clinic, "https://93.184.215.14/hooks", ["*"])
    response = client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/test", headers=clinic.headers
    )
    assert response.status_code == 202, response.text
    out = response.json()
    assert out["event_type"] == "webhook.test" and out["endpoint_id"] == endpoint["id"]
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 1
    run(db, deliverer, out["id"])
    (request,) = receiver.requests
    assert verify(endpoint["secret"], request)["type"] == "webhook.test"


def test_deleting_an_endpoint_drops_its_queued_deliveries(
    client: TestClient, clinic: Clinic, db: Database, receiver: Receiver, deliverer: wd.Deliverer
) -> None:
    endpoint = create_endpoint(client, clinic, receiver.url)
    (delivery_id,) = publish(db, clinic.id, "booking.created", {})
    client.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=clinic.headers)
    run(db, deliverer, delivery_id)  # the job finds nothing and stops quietly
    assert receiver.requests == []
