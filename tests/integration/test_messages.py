"""Messages: queueing (templates, literal, opt-out, bad input), the send job against a
real SMTP server (aiosmtpd), at most once after a crash mid-send, retries, and the
booking confirmation e-mail sent by the running service within seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from icalendar import Calendar

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging import booking_messages, sending
from clinicbridge.messaging.models import Message
from clinicbridge.settings import Settings
from tests.conftest import Clinic, LiveServer, free_port
from tests.integration.test_smtp import Server, Sink

API = "/api/v1"


@pytest.fixture
def smtp() -> Iterator[Server]:
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    yield Server(port, sink)
    controller.stop()


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _email_integration(client: Any, clinic: Clinic, port: int) -> str:
    body = {
        "connector": "smtp",
        "name": "Front desk mail",
        "settings": {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_email": "rdv@clinic.example",
            "from_name": "Maple Clinic",
        },
    }
    return str(
        _ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"]
    )


def _patient(client: Any, clinic: Clinic, email: str | None = "quinn@example.com") -> str:
    body: dict[str, Any] = {
        "first_name": "Quinn",
        "last_name": "Sample",
        "date_of_birth": "1984-02-03",
    }
    if email:
        body["email"] = email
    return str(
        _ok(client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers), 201)["id"]
    )


def run_jobs(db: Database, settings: Settings, kind: str, *, attempt: int = 1) -> int:
    """Run the pending jobs of ``kind`` once, in this thread, as the worker would."""
    with db.read() as session:
        jobs = session.scalars(sa.select(Job).where(Job.kind == kind, Job.state == "pending")).all()
    handler = registry.get(kind)
    assert handler is not None
    for job in jobs:
        handler.handler(
            JobContext(
                job.id,
                kind,
                job.tenant_id,
                dict(job.payload),
                attempt,
                8,
                db,
                SystemClock().now,
                settings,
            )
        )
    return len(jobs)


def _message(db: Database, message_id: str) -> Message:
    with db.read() as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


def test_a_literal_e_mail_is_queued_sent_once_and_has_a_timeline(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    body = {
        "patient_id": patient,
        "channel": "email",
        "subject": "Your forms",
        "body": "Please bring your health card.",
    }
    queued = _ok(client.post(f"{API}/messages", json=body, headers=clinic.headers), 202)
    assert queued["status"] == "queued" and queued["provider"] == "smtp"
    assert run_jobs(db, settings, sending.SEND_KIND) == 1
    got = smtp.sink.only()
    assert got["To"] == "quinn@example.com" and got["Subject"] == "Your forms"
    assert "health card" in got.get_content()
    sent = _ok(client.get(f"{API}/messages/{queued['id']}", headers=clinic.headers))
    assert sent["status"] == "sent" and queued["id"] in sent["provider_message_id"]
    assert [e["status"] for e in sent["timeline"]] == ["queued", "sending", "sent"]
    sending.send(
        JobContext(
            "job_again",
            sending.SEND_KIND,
            clinic.id,
            {"message_id": queued["id"]},
            2,
            8,
            db,
            SystemClock().now,
            settings,
        )
    )
    assert len(smtp.sink.envelopes) == 1  # a settled message is never sent again


def test_a_template_renders_in_the_patients_language_and_names_missing_variables(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    body = {
        "patient_id": patient,
        "channel": "email",
        "template": "booking.reminder",
        "variables": {"clinic": {"name": "Maple Clinic"}},
    }
    problem = client.post(f"{API}/messages", json=body, headers=clinic.headers)
    assert problem.status_code == 422 and problem.json()["errors"][0]["field"] == "variables"
    for name in ("template", "body"):
        bad = {"patient_id": patient, "channel": "email", name: None}
        assert client.post(f"{API}/messages", json=bad, headers=clinic.headers).status_code == 422
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_an_opted_out_patient_gets_a_suppressed_message_never_sent(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    message = {"patient_id": patient, "channel": "email", "subject": "Hi", "body": "Hello"}
    before = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    opt_out = {"consents": [{"channel": "email", "granted": False, "source": "patient e-mail"}]}
    _ok(client.put(f"{API}/patients/{patient}/consents", json=opt_out, headers=clinic.headers))
    after = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    assert after["status"] == "suppressed"
    run_jobs(db, settings, sending.SEND_KIND)
    assert smtp.sink.envelopes == []  # the opt-out came between queueing and sending
    assert _message(db, before["id"]).status == "suppressed"


def test_a_send_cut_short_is_never_repeated(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    message = {"patient_id": patient, "channel": "email", "subject": "Hi", "body": "Hello"}
    queued = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    with db.write() as session:  # a worker marked it sending, then died before settling
        row = session.get(Message, queued["id"])
        assert row is not None
        row.status, row.send_started_at = "sending", datetime.now(UTC)
    run_jobs(db, settings, sending.SEND_KIND, attempt=2)
    assert smtp.sink.envelopes == []
    assert _message(db, queued["id"]).status == "unknown"


def test_an_unreachable_server_is_retried_then_failed(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings
) -> None:
    _email_integration(client, clinic, free_port())  # nothing listens there
    patient = _patient(client, clinic)
    message = {"patient_id": patient, "channel": "email", "subject": "Hi", "body": "Hello"}
    queued = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    with pytest.raises(Exception, match="refused"):
        run_jobs(db, settings, sending.SEND_KIND, attempt=1)
    assert _message(db, queued["id"]).status == "queued"
    run_jobs(db, settings, sending.SEND_KIND, attempt=8)
    failed = _message(db, queued["id"])
    assert failed.status == "failed" and "refused" in (failed.error or "")


def test_bad_recipients_and_missing_integrations_are_clear_422s(
    client: TestClient, clinic: Clinic, make_clinic: Callable[..., Clinic], smtp: Server
) -> None:
    patient = _patient(client, clinic)
    message = {"patient_id": patient, "channel": "email", "subject": "Hi", "body": "Hello"}
    problem = client.post(f"{API}/messages", json=message, headers=clinic.headers).json()
    assert problem["errors"][0]["code"] == "no_provider"
    _email_integration(client, clinic, smtp.port)
    no_email = _patient(client, clinic, email=None)
    problem = client.post(
        f"{API}/messages", json={**message, "patient_id": no_email}, headers=clinic.headers
    ).json()
    assert problem["errors"][0]["code"] == "no_address"
    other = make_clinic("Birch Clinic")
    answer = client.post(f"{API}/messages", json=message, headers=other.headers)
    assert answer.json()["errors"][0]["field"] == "patient_id"
    sent = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    assert client.get(f"{API}/messages/{sent['id']}", headers=other.headers).status_code == 404


def _schedule(client: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    loc = client.post(
        f"{API}/locations", json={"name": "Main St", "timezone": "America/Toronto"}, headers=headers
    ).json()["id"]
    prv = client.post(
        f"{API}/providers",
        json={"display_name": "Dr. Ada Test", "timezone": "America/Toronto"},
        headers=headers,
    ).json()["id"]
    hours = [{"weekday": d, "start": "00:00", "end": "24:00", "location_id": loc} for d in range(7)]
    client.put(f"{API}/providers/{prv}/hours", json={"intervals": hours}, headers=headers)
    svc = client.post(
        f"{API}/services",
        json={"name": "Check-up", "duration_minutes": 30, "provider_ids": [prv]},
        headers=headers,
    ).json()["id"]
    return prv, svc


def test_a_booking_sends_its_confirmation_e_mail_within_seconds(
    live_server: LiveServer, clinic: Clinic, smtp: Server
) -> None:
    with httpx.Client(base_url=live_server.url, headers=clinic.headers, timeout=10) as client:
        _email_integration(client, clinic, smtp.port)
        patient = _patient(client, clinic)
        provider, service = _schedule(client, clinic.headers)
        start = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        booked = _ok(
            client.post(
                f"{API}/bookings",
                json={
                    "service_id": service,
                    "provider_id": provider,
                    "start": start.isoformat(),
                    "patient_id": patient,
                },
            ),
            201,
        )
        deadline = time.monotonic() + 10
        while not smtp.sink.envelopes and time.monotonic() < deadline:
            time.sleep(0.05)
    got = smtp.sink.only()
    text = got.get_body(preferencelist=("plain",))
    assert text is not None and booked["confirmation_code"] in text.get_content()
    assert got["To"] == "quinn@example.com" and "/b/" in text.get_content()
    invites = [
        part for part in got.iter_attachments() if part.get_content_type() == "text/calendar"
    ]
    event = Calendar.from_ical(invites[0].get_content()).walk("VEVENT")[0]
    assert event.decoded("dtstart") == start


def test_the_booking_listener_queues_one_message_per_change(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    provider, service = _schedule(client, clinic.headers)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    _ok(
        client.post(
            f"{API}/bookings",
            json={
                "service_id": service,
                "provider_id": provider,
                "start": start.isoformat(),
                "patient_id": patient,
            },
            headers=clinic.headers,
        ),
        201,
    )
    with db.read() as session:
        (job,) = session.scalars(
            sa.select(Job).where(Job.kind == booking_messages.LISTENER_KIND)
        ).all()
    context = JobContext(
        job.id, job.kind, job.tenant_id, dict(job.payload), 1, 5, db, SystemClock().now, settings
    )
    booking_messages.on_booking_changed(context)
    booking_messages.on_booking_changed(context)  # a job that runs twice
    with db.read() as session:
        kinds = session.scalars(sa.select(Message.kind)).all()
    assert kinds == ["booking.confirmation"]
