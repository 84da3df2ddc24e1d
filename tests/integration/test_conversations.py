"""Two-way SMS: patients' replies (signed with the official ``twilio`` SDK, through the
real inbox) land in their conversation or become staff tasks; staff read and answer;
everything once, audited, and never visible to another clinic."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.messaging.conversation_models import InboundMessage
from clinicbridge.messaging.service import SEND_KIND
from clinicbridge.settings import Settings
from clinicbridge.tasks.models import StaffTask
from clinicbridge.webhooks.inbox import PROCESS_KIND
from clinicbridge.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import Clinic, add_key
from tests.integration.test_twilio_messaging import (
    API,
    PHONE,
    FakeTwilio,
    _book,
    _ok,
    _patient,
    _post_webhook,
    _reply,
    _twilio,
    fake,
    run,
)

__all__ = ["fake"]  # the fixture, imported for its name


def _subscribe(db: Database, clinic: Clinic, event_type: str) -> None:
    """An endpoint of the clinic's own system subscribed to ``event_type`` (delivery
    itself is tested with the outbound webhooks)."""
    now = SystemClock().now()
    with db.write() as session:
        session.add(
            WebhookEndpoint(id=new_id("whe"), tenant_id=clinic.id, url="https://pms.test/hook",
                            event_types=[event_type], secret="unused", enabled=True,
                            created_at=now, updated_at=now)
        )  # fmt: skip


def _conversation(client: TestClient, clinic: Clinic, patient: str) -> list[dict[str, Any]]:
    answer = client.get(f"{API}/patients/{patient}/conversation", headers=clinic.headers)
    return list(_ok(answer)["data"])


def test_a_free_text_reply_joins_the_conversation_unread_and_staff_answer_it(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _reply(client, settings, integration, "Can I bring my daughter along?")
    run(db, settings, PROCESS_KIND)

    listed = _ok(client.get(f"{API}/conversations", headers=clinic.headers))["data"]
    assert [(c["patient_id"], c["unread"]) for c in listed] == [(patient, 1)]
    assert "body" not in listed[0]  # a list shows no message text

    items = _conversation(client, clinic, patient)
    assert [(i["direction"], i["body"], i["handled_as"]) for i in items] == [
        ("inbound", "Can I bring my daughter along?", "conversation")
    ]
    answer = client.post(
        f"{API}/patients/{patient}/conversation/replies",
        json={"body": "Of course, see you Tuesday."},
        headers=clinic.headers,
    )
    sent = _ok(answer, 202)
    assert sent["channel"] == "sms" and sent["status"] == "queued"
    run(db, settings, SEND_KIND)
    assert fake.posts[-1]["Body"] == "Of course, see you Tuesday."
    assert fake.posts[-1]["To"] == PHONE

    items = _conversation(client, clinic, patient)
    assert [(i["direction"], i["status"]) for i in items] == [
        ("inbound", None),
        ("outbound", "sent"),
    ]
    assert _ok(client.get(f"{API}/conversations?unread=true", headers=clinic.headers))["data"] == []
    with db.read() as session:
        reads = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "conversation.read")
        ).all()
    assert len(reads) == 2 and all(r.phi and r.resource_id == patient for r in reads)


def test_r_opens_one_reschedule_task_even_when_the_webhook_is_replayed(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    booking = _book(client, clinic, patient, days=3)
    _subscribe(db, clinic, "message.received")
    params = {"MessageSid": "SM" + "a" * 32, "AccountSid": "x", "From": PHONE, "To": "+1",
              "Body": " r ", "NumMedia": "0"}  # fmt: skip
    _post_webhook(client, settings, integration, params)
    run(db, settings, PROCESS_KIND)
    replay = client.get(f"{API}/webhook-events", headers=clinic.headers).json()["data"][0]["id"]
    _ok(client.post(f"{API}/webhook-events/{replay}/replay", headers=clinic.headers))
    run(db, settings, PROCESS_KIND)

    tasks = _ok(client.get(f"{API}/tasks?status=open", headers=clinic.headers))["data"]
    assert [(t["kind"], t["patient_id"], t["booking_id"]) for t in tasks] == [
        ("booking.reschedule_request", patient, booking)
    ]
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) == 1
        received = session.scalars(
            sa.select(WebhookDelivery.payload).where(
                WebhookDelivery.event_type == "message.received"
            )
        ).all()
    assert len(received) == 1 and "body" not in received[0]["data"]
    assert received[0]["data"]["handled_as"] == "reschedule_request"

    task = tasks[0]["id"]
    done = client.post(
        f"{API}/tasks/{task}/resolve",
        json={"status": "done", "resolution": "Moved to Thursday by phone"},
        headers=clinic.headers,
    )
    assert _ok(done)["status"] == "done"
    again = client.post(f"{API}/tasks/{task}/resolve", json={"status": "dismissed"},
                        headers=clinic.headers)  # fmt: skip
    assert again.status_code == 409 and again.json()["type"].endswith("/task-state")
    bad = client.post(f"{API}/tasks/{task}/resolve", json={"status": "open"},
                      headers=clinic.headers)  # fmt: skip
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


def test_r_without_an_upcoming_booking_is_a_message_for_staff(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _reply(client, settings, integration, "R")
    run(db, settings, PROCESS_KIND)
    assert _ok(client.get(f"{API}/tasks", headers=clinic.headers))["data"] == []
    assert [i["handled_as"] for i in _conversation(client, clinic, patient)] == ["conversation"]


def test_keywords_are_recorded_as_read_and_an_unknown_number_joins_no_conversation(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _reply(client, settings, integration, "STOP")
    _reply(client, settings, integration, "Hello?", sender="+15145550123")
    run(db, settings, PROCESS_KIND)
    assert _ok(client.get(f"{API}/conversations?unread=true", headers=clinic.headers))["data"] == []
    assert [i["handled_as"] for i in _conversation(client, clinic, patient)] == ["opt_out"]
    with db.read() as session:
        stranger = session.scalars(
            sa.select(InboundMessage).where(InboundMessage.patient_id.is_(None))
        ).one()
    assert stranger.handled_as == "conversation" and stranger.read_at is None
    # The patient said STOP: a staff answer is recorded, never sent.
    sent = client.post(f"{API}/patients/{patient}/conversation/replies",
                       json={"body": "Noted."}, headers=clinic.headers)  # fmt: skip
    assert _ok(sent, 202)["status"] == "suppressed"


def test_whatsapp_replies_only_inside_the_24_hour_window(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    late = client.post(
        f"{API}/patients/{patient}/conversation/replies",
        json={"body": "Hi", "channel": "whatsapp"},
        headers=clinic.headers,
    )
    assert late.status_code == 422
    assert late.json()["errors"][0] == {
        "field": "channel",
        "message": late.json()["errors"][0]["message"],
        "code": "whatsapp_window",
    }


def test_another_clinic_sees_neither_the_conversation_nor_the_tasks(
    client: TestClient,
    clinic: Clinic,
    make_clinic: Any,
    db: Database,
    settings: Settings,
    fake: FakeTwilio,
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _book(client, clinic, patient, days=2)
    _reply(client, settings, integration, "r")
    run(db, settings, PROCESS_KIND)
    other = make_clinic("Other Clinic")
    assert (
        client.get(f"{API}/patients/{patient}/conversation", headers=other.headers).status_code
        == 404
    )
    assert _ok(client.get(f"{API}/conversations", headers=other.headers))["data"] == []
    assert _ok(client.get(f"{API}/tasks", headers=other.headers))["data"] == []
    with db.read() as session:
        task = session.scalars(sa.select(StaffTask)).one()
    assert client.get(f"{API}/tasks/{task.id}", headers=other.headers).status_code == 404
    reply = client.post(f"{API}/patients/{patient}/conversation/replies", json={"body": "x"},
                        headers=other.headers)  # fmt: skip
    assert reply.status_code == 404
    # Permissions: the auditor role reads tasks but cannot resolve them or answer.
    auditor = add_key(db, clinic, "auditor")
    assert client.get(f"{API}/tasks", headers=auditor.headers).status_code == 200
    refused = client.post(f"{API}/tasks/{task.id}/resolve", json={"status": "done"},
                          headers=auditor.headers)  # fmt: skip
    assert refused.status_code == 403
