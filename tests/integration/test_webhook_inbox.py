"""``POST /webhooks/{integration_id}``: verify, dedupe, persist, enqueue, answer; then process.

Signatures are made with the providers' own SDKs (stripe, twilio) as oracles.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock, SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.jobs.worker import Worker, WorkerConfig
from clinicbridge.settings import Settings
from clinicbridge.webhooks.models import WebhookEvent
from tests.conftest import Clinic

WHSEC = "whsec_inboxTestSecret0123456789abcdef"
TWILIO_TOKEN = "twilio-auth-token-0123456789"


def stripe_event(event_id: str = "evt_1", kind: str = "payment_intent.succeeded") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {"object": {"id": "pi_1", "amount": 4200}},
        }
    ).encode()


def stripe_headers(body: bytes, secret: str = WHSEC, ts: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=ts or int(time.time())
    )
    return {"Stripe-Signature": str(header), "Content-Type": "application/json"}


def make(
    client: TestClient,
    clinic: Clinic,
    connector: str,
    credentials: dict,
    settings: dict | None = None,
) -> str:  # type: ignore[type-arg]
    created = client.post(
        "/api/v1/integrations",
        headers=clinic.headers,
        json={
            "connector": connector,
            "name": connector,
            "credentials": credentials,
            "settings": settings or {},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.fixture
def stripe_id(client: TestClient, clinic: Clinic) -> str:
    return make(
        client,
        clinic,
        "stripe",
        {"api_key": "sk_test_51Inbox000000000000000000000000", "webhook_secret": WHSEC},
    )


def events(db: Database) -> list[WebhookEvent]:
    with db.read() as session:
        return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def test_signed_event_is_stored_once_and_enqueued(
    client: TestClient, db: Database, stripe_id: str
) -> None:
    body = stripe_event()
    first = client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    assert first.status_code == 200 and first.json() == {"received": 1, "duplicates": 0}
    again = client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    assert again.json() == {"received": 0, "duplicates": 1}
    [stored] = events(db)
    assert (stored.provider_event_id, stored.type, stored.status) == (
        "evt_1",
        "payment_intent.succeeded",
        "received",
    )
    assert stored.raw_body == body and stored.payload["data"]["object"]["amount"] == 4200
    assert "stripe-signature" in stored.headers
    with db.read() as session:
        jobs = session.scalars(sa.select(Job).where(Job.kind == "webhooks.process")).all()
    assert [j.payload for j in jobs] == [{"event_id": stored.id}]


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "future", "missing"])
def test_unverifiable_requests_get_a_generic_401_and_nothing_is_stored(
    client: TestClient, db: Database, stripe_id: str, case: str
) -> None:
    body = stripe_event()
    now = int(time.time())
    headers = {
        "tampered": stripe_headers(body),
        "wrong_secret": stripe_headers(body, secret="whsec_someoneElse"),
        "stale": stripe_headers(body, ts=now - 600),
        "future": stripe_headers(body, ts=now + 600),
        "missing": {"Content-Type": "application/json"},
    }[case]
    sent = body.replace(b"4200", b"1") if case == "tampered" else body
    response = client.post(f"/webhooks/{stripe_id}", content=sent, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "The request could not be verified."
    assert events(db) == []
    with db.read() as session:
        audit = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "webhook.verification_failed")
        ).all()
    assert len(audit) == 1 and audit[0].outcome == "failure"
    assert WHSEC not in json.dumps(audit[0].diff)


def test_unknown_or_disabled_integration_is_404(
    client: TestClient, clinic: Clinic, stripe_id: str
) -> None:
    body = stripe_event()
    assert (
        client.post(
            "/webhooks/int_" + "0" * 26, content=body, headers=stripe_headers(body)
        ).status_code
        == 404
    )
    client.patch(
        f"/api/v1/integrations/{stripe_id}", headers=clinic.headers, json={"enabled": False}
    )
    assert (
        client.post(
            f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body)
        ).status_code
        == 404
    )


def test_repeated_failures_from_one_ip_are_throttled(client: TestClient, stripe_id: str) -> None:
    body = stripe_event()
    statuses = [
        client.post(
            f"/webhooks/{stripe_id}",
            content=body,
            headers=stripe_headers(body, secret="whsec_forged"),
        ).status_code
        for _ in range(25)
    ]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}


def test_old_secret_verifies_for_24_hours_after_rotation(
    settings: Settings, db: Database, clinic: Clinic
) -> None:
    clock = FakeClock(SystemClock().now())
    with TestClient(create_app(settings, db=db, clock=clock)) as client:
        integration = make(
            client,
            clinic,
            "stripe",
            {"api_key": "sk_test_51Inbox000000000000000000000000", "webhook_secret": WHSEC},
        )
        client.post(
            f"/api/v1/integrations/{integration}/rotate-webhook-secret",
            headers=clinic.headers,
            json={"webhook_secret": "whsec_rotatedSecret987"},
        )

        def send(event_id: str, secret: str) -> int:
            body = stripe_event(event_id)
            ts = int(clock.now().timestamp())
            return client.post(
                f"/webhooks/{integration}", content=body, headers=stripe_headers(body, secret, ts)
            ).status_code

        assert send("evt_new", "whsec_rotatedSecret987") == 200
        assert send("evt_old", WHSEC) == 200
        clock.advance(timedelta(hours=24, minutes=1))
        assert send("evt_old_late", WHSEC) == 401
        assert send("evt_new_late", "whsec_rotatedSecret987") == 200


def test_twilio_form_callback_behind_a_proxy(
    settings: Settings, db: Database, clinic: Clinic
) -> None:
    public = settings.model_copy(update={"base_url": "https://clinic.example.com"})
    with TestClient(create_app(public, db=db)) as client:
        integration = make(
            client,
            clinic,
            "twilio",
            {"account_sid": "AC" + "1" * 32, "auth_token": TWILIO_TOKEN},
            {"from_number": "+15145550100"},
        )
        params = {
            "MessageSid": "SM" + "2" * 32,
            "MessageStatus": "delivered",
            "To": "+15145550199",
            "From": "+15145550100",
        }
        url = f"https://clinic.example.com/webhooks/{integration}"
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
        response = client.post(
            f"/webhooks/{integration}",
            content=urlencode(params),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/xml")
        [stored] = events(db)
        assert stored.type == "message.status"


def test_zoom_url_validation_is_answered(client: TestClient, clinic: Clinic, db: Database) -> None:
    import hashlib
    import hmac

    secret = "zoom-secret-token-123"
    integration = make(
        client,
        clinic,
        "zoom",
        {"client_id": "abc", "client_secret": "def", "webhook_secret": secret},
        {"account_id": "acct1"},
    )
    body = json.dumps(
        {
            "event": "endpoint.url_validation",
            "event_ts": int(time.time() * 1000),
            "payload": {"plainToken": "plain123"},
        }
    ).encode()
    ts = str(int(time.time()))
    signature = (
        "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    )
    response = client.post(
        f"/webhooks/{integration}",
        content=body,
        headers={
            "x-zm-signature": signature,
            "x-zm-request-timestamp": ts,
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "plainToken": "plain123",
        "encryptedToken": hmac.new(secret.encode(), b"plain123", hashlib.sha256).hexdigest(),
    }
    assert events(db) == []


class Recorder(list[StoredEvent]):
    """A domain's handler for payment_intent.succeeded, as payments will register it."""

    fail = False

    def __call__(self, event: StoredEvent, job: JobContext) -> None:
        if self.fail:
            raise ValueError("handler broke")
        self.append(event)


@pytest.fixture
def seen() -> Iterator[Recorder]:
    recorder = Recorder()
    integrations.on("stripe", "payment_intent.succeeded")(recorder)
    yield recorder
    integrations.handlers[("stripe", "payment_intent.succeeded")].remove(recorder)


def _run_worker(db: Database, until: Callable[[], bool]) -> None:
    worker = Worker(db, SystemClock(), jobs=registry, config=WorkerConfig(heartbeat_seconds=0.2))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    try:
        while not until():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)


def test_events_are_processed_by_registered_handlers_and_replayable(
    client: TestClient, db: Database, clinic: Clinic, stripe_id: str, seen: Recorder
) -> None:
    body = stripe_event("evt_paid")
    client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    other = stripe_event("evt_other", kind="customer.created")
    client.post(f"/webhooks/{stripe_id}", content=other, headers=stripe_headers(other))
    _run_worker(db, lambda: {e.status for e in events(db)} == {"processed", "ignored"})
    assert [e.provider_event_id for e in seen] == ["evt_paid"]
    assert seen[0].tenant_id == clinic.id and seen[0].connector == "stripe"

    listed = client.get("/api/v1/webhook-events?status=processed", headers=clinic.headers).json()
    [paid] = listed["data"]
    replayed = client.post(f"/api/v1/webhook-events/{paid['id']}/replay", headers=clinic.headers)
    assert replayed.status_code == 200 and replayed.json()["status"] == "received"
    _run_worker(db, lambda: len(seen) == 2)
    assert [e.provider_event_id for e in seen] == ["evt_paid", "evt_paid"]
    detail = client.get(f"/api/v1/webhook-events/{paid['id']}", headers=clinic.headers).json()
    assert detail["status"] == "processed" and detail["raw_body_retained"] is True


def test_failing_handler_marks_the_event_failed(
    client: TestClient, db: Database, stripe_id: str, seen: Recorder
) -> None:
    seen.fail = True
    body = stripe_event("evt_broken")
    client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    _run_worker(db, lambda: events(db)[0].status == "failed")
    assert events(db)[0].last_error == "ValueError"


def test_events_of_other_clinics_are_invisible(
    client: TestClient,
    make_clinic,
    stripe_id: str,
    db: Database,  # type: ignore[no-untyped-def]
) -> None:
    body = stripe_event()
    client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    other = make_clinic("Birch")
    assert client.get("/api/v1/webhook-events", headers=other.headers).json()["data"] == []
    event_id = events(db)[0].id
    assert (
        client.get(f"/api/v1/webhook-events/{event_id}", headers=other.headers).status_code == 404
    )
    assert (
        client.post(f"/api/v1/webhook-events/{event_id}/replay", headers=other.headers).status_code
        == 404
    )


def test_raw_bodies_are_purged_after_retention(
    client: TestClient, db: Database, stripe_id: str
) -> None:
    from clinicbridge.webhooks.processing import purge_bodies

    body = stripe_event()
    client.post(f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body))
    clock = FakeClock(SystemClock().now() + timedelta(days=31))
    purge_bodies(JobContext("job_x", "webhooks.purge_bodies", None, {}, 1, 1, db, clock.now))
    [stored] = events(db)
    assert stored.raw_body is None and stored.payload["id"] == "evt_1"
