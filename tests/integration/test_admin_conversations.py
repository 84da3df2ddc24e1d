"""The admin conversations, tasks and reminder rules pages over HTTP: what staff see,
answering a patient, closing a task, editing rules with field errors; permissions,
CSRF, audit of the names shown, and tenant isolation (no browser)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.reminder_models import ReminderRule
from clinicbridge.settings import Settings
from clinicbridge.tasks.models import StaffTask
from clinicbridge.web.reminder_rules import offsets_text, parse_offsets
from clinicbridge.webhooks.inbox import PROCESS_KIND
from tests.conftest import Clinic
from tests.integration.test_admin_web import _csrf, _login, _user
from tests.integration.test_twilio_messaging import (
    FakeTwilio,
    _book,
    _patient,
    _reply,
    _twilio,
    fake,
    run,
)

__all__ = ["fake"]  # the fixture, imported for its name


def _signed_in(client: TestClient, clinic: Clinic, role: str = "owner") -> dict[str, str]:
    email = f"{role}@maple.example.com"
    _user(client, clinic, email, role=role)
    _login(client, email)
    page = client.get(f"/admin/tenants/{clinic.id}/conversations")
    assert page.status_code == 200, page.text
    return {"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)}


def _wrote(client: TestClient, clinic: Clinic, db: Database, settings: Settings) -> str:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _book(client, clinic, patient, days=2)
    _reply(client, settings, integration, "Is there parking nearby?")
    _reply(client, settings, integration, "R")
    run(db, settings, PROCESS_KIND)
    return patient


def test_staff_see_who_wrote_read_the_thread_answer_and_close_the_task(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    patient = _wrote(client, clinic, db, settings)
    hx = _signed_in(client, clinic)
    page = client.get(f"/admin/tenants/{clinic.id}/conversations")
    assert "Rene Sample" in page.text and "Patient asked by SMS to reschedule" in page.text
    assert "Is there parking nearby?" not in page.text  # the list shows no message text
    thread = client.get(f"/admin/tenants/{clinic.id}/conversations/{patient}")
    assert "Is there parking nearby?" in thread.text and "reschedule request" in thread.text
    answered = client.post(f"/admin/tenants/{clinic.id}/conversations/{patient}/reply",
                           headers=hx, data={"body": "Yes, behind the clinic."})  # fmt: skip
    assert answered.status_code == 200 and "Answer queued." in answered.text
    assert 'data-direction="outbound"' in answered.text
    empty = client.post(f"/admin/tenants/{clinic.id}/conversations/{patient}/reply",
                        headers=hx, data={"body": "  "})  # fmt: skip
    assert empty.status_code == 422 and "body: must not be empty" in empty.text
    with db.read() as session:
        task = session.scalars(sa.select(StaffTask)).one()
        sent = session.scalars(sa.select(Message.body).where(Message.kind == "literal")).all()
        shown = session.scalars(
            sa.select(AuditEvent.diff).where(AuditEvent.action == "patient.read")
        ).all()
    assert sent == ["Yes, behind the clinic."]
    assert {"purpose": "conversations"} in shown  # the names shown are audited
    closed = client.post(f"/admin/tenants/{clinic.id}/tasks/{task.id}/resolve", headers=hx,
                         data={"status": "done", "resolution": "Moved by phone"})  # fmt: skip
    assert closed.status_code == 200 and "Nothing to do." in closed.text
    twice = client.post(f"/admin/tenants/{clinic.id}/tasks/{task.id}/resolve", headers=hx,
                        data={"status": "done"})  # fmt: skip
    assert twice.status_code == 409 and "already done" in twice.text


def test_forms_need_the_csrf_token_and_the_permission(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    patient = _wrote(client, clinic, db, settings)
    hx = _signed_in(client, clinic, role="auditor")
    page = client.get(f"/admin/tenants/{clinic.id}/conversations/{patient}")
    assert page.status_code == 200 and "Send</button>" not in page.text
    refused = client.post(f"/admin/tenants/{clinic.id}/conversations/{patient}/reply",
                          headers=hx, data={"body": "hi"})  # fmt: skip
    assert refused.status_code == 403
    no_token = client.post(f"/admin/tenants/{clinic.id}/reminder-rules/save",
                           headers={"HX-Request": "true"}, data={"offsets": "2h"})  # fmt: skip
    assert no_token.status_code in (403, 422)


def test_another_clinics_conversation_is_not_found(
    client: TestClient,
    clinic: Clinic,
    make_clinic: Any,
    db: Database,
    settings: Settings,
    fake: FakeTwilio,
) -> None:
    patient = _wrote(client, clinic, db, settings)
    other = make_clinic("Other Clinic")
    _signed_in(client, other)
    assert client.get(f"/admin/tenants/{other.id}/conversations/{patient}").status_code == 404
    assert client.get(f"/admin/tenants/{clinic.id}/conversations").status_code == 404


def test_reminder_rules_page_saves_the_clinic_rule_and_names_bad_fields(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    hx = _signed_in(client, clinic)
    page = client.get(f"/admin/tenants/{clinic.id}/reminder-rules")
    assert "built-in defaults" in page.text and 'value="24h, 2h"' in page.text
    form = {"service_id": "", "offsets": "2d, 90m", "channels": "email, sms",
            "quiet_start": "22:00", "quiet_end": "07:30", "min_lead_minutes": "45",
            "enabled": "on"}  # fmt: skip
    saved = client.post(f"/admin/tenants/{clinic.id}/reminder-rules/save", headers=hx, data=form)
    assert saved.status_code == 200 and "Rule saved." in saved.text
    with db.read() as session:
        rule = session.scalars(sa.select(ReminderRule)).one()
    assert (rule.offsets, rule.channels, rule.quiet_start, rule.quiet_end) == (
        [2880, 90], ["email", "sms"], 22 * 60, 7 * 60 + 30,
    )  # fmt: skip
    for field, bad in (("offsets", "soon"), ("channels", "fax"), ("quiet_end", "25:00"),
                       ("min_lead_minutes", "-5")):  # fmt: skip
        answer = client.post(f"/admin/tenants/{clinic.id}/reminder-rules/save", headers=hx,
                             data={**form, field: bad})  # fmt: skip
        assert answer.status_code == 422 and f'data-field="{field}"' in answer.text, field
    removed = client.post(f"/admin/tenants/{clinic.id}/reminder-rules/delete", headers=hx,
                          data={"service_id": ""})  # fmt: skip
    assert removed.status_code == 200 and "built-in defaults" in removed.text


def test_offsets_read_and_write_as_people_type_them() -> None:
    assert parse_offsets("24h, 2h") == [1440, 120]
    assert parse_offsets("1d,90m, 30") == [1440, 90, 30]
    assert offsets_text([1440, 90]) == "24h, 90m"
