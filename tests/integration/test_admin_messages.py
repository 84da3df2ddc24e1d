"""The admin messages and templates pages over HTTP: rendering, preview, save with field
errors, reset, test sends, permissions, CSRF and tenant isolation (no browser)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.messaging.models import ClinicTemplate, Message
from clinicbridge.settings import Settings
from clinicbridge.web.messages import mask_address
from tests.conftest import Clinic
from tests.integration.test_admin_web import _csrf, _login, _user
from tests.integration.test_messages import _email_integration, _patient, run_jobs, smtp  # noqa: F401
from tests.integration.test_smtp import Server

KIND = "booking.confirmation"


def _signed_in(
    client: TestClient, clinic: Clinic, role: str = "owner", who: str = "maple"
) -> dict[str, str]:
    email = f"{role}@{who}.example.com"
    _user(client, clinic, email, role=role)
    _login(client, email)
    page = client.get(f"/admin/tenants/{clinic.id}/templates")
    assert page.status_code == 200, page.text
    return {"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)}


def _form(**fields: str) -> dict[str, str]:
    return {"kind": KIND, "channel": "email", "language": "en", **fields}


def _templates(db: Database) -> list[ClinicTemplate]:
    with db.read() as session:
        return list(session.scalars(sa.select(ClinicTemplate)))


def test_mask_address() -> None:
    assert mask_address("quinn@example.com") == "q***@example.com"
    assert mask_address("+14165550199") == "+1416***0199"
    assert mask_address(None) == ""


def test_templates_page_shows_the_built_in_template_and_its_preview(
    client: TestClient, clinic: Clinic
) -> None:
    _signed_in(client, clinic)
    page = client.get(f"/admin/tenants/{clinic.id}/templates")
    assert "The built-in template (en)" in page.text
    assert 'href="/admin/tenants/' in page.text and ">Templates</a>" in page.text
    assert "Maple Family Clinic" in page.text  # the sample data, rendered
    sms = client.get(f"/admin/tenants/{clinic.id}/templates?kind={KIND}&channel=sms&language=fr")
    assert sms.status_code == 200 and 'id="preview-sms"' in sms.text
    assert "segment" in sms.text and "Test messages go by e-mail" in sms.text


def test_preview_renders_what_is_typed_and_saves_nothing(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    hx = _signed_in(client, clinic)
    preview = client.post(
        f"/admin/tenants/{clinic.id}/templates/preview",
        headers=hx,
        data=_form(subject="See you, {{ patient.first_name }}", body="Hi {{ clinic.name }}"),
    )
    assert preview.status_code == 200
    assert preview.text.lstrip().startswith('<section class="preview" id="template-preview"')
    assert '<span id="preview-subject">See you, Alex</span>' in preview.text
    assert "Hi Maple Family Clinic" in preview.text
    sms = client.post(
        f"/admin/tenants/{clinic.id}/templates/preview",
        headers=hx,
        data=_form(channel="sms", body="Rendez-vous à {{ booking.time_text }} ✓"),
    )
    assert "UCS-2" in sms.text and 'data-segments="1"' in sms.text
    bad = client.post(
        f"/admin/tenants/{clinic.id}/templates/preview",
        headers=hx,
        data=_form(subject="x", body="{{ patient.last_name }}"),
    )
    assert 'id="preview-errors"' in bad.text and "body:" in bad.text
    assert _templates(db) == []


def test_save_with_an_unknown_variable_shows_the_field_error_and_saves_nothing(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    hx = _signed_in(client, clinic)
    bad = client.post(
        f"/admin/tenants/{clinic.id}/templates/save",
        headers=hx,
        data=_form(subject="Hello {{ patient.last_name }}", body="Body", html=""),
    )
    assert bad.status_code == 422
    assert 'id="subject-error"' in bad.text and "last_name" in bad.text
    assert 'aria-describedby="subject-error"' in bad.text
    assert 'value="Hello {{ patient.last_name }}"' in bad.text  # what was typed is kept
    assert _templates(db) == []


def test_save_and_reset_to_built_in(client: TestClient, clinic: Clinic, db: Database) -> None:
    hx = _signed_in(client, clinic)
    saved = client.post(
        f"/admin/tenants/{clinic.id}/templates/save",
        headers=hx,
        data=_form(subject="Booked: {{ booking.start_text }}", body="See you {{ clinic.name }}"),
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert saved.text.lstrip().startswith('<section class="card" id="template-editor"')
    assert [(t.kind, t.channel, t.language, t.subject) for t in _templates(db)] == [
        (KIND, "email", "en", "Booked: {{ booking.start_text }}")
    ]
    page = client.get(f"/admin/tenants/{clinic.id}/templates")
    assert "The clinic's own template, last changed" in page.text
    assert "Reset to built-in" in page.text
    reset = client.post(f"/admin/tenants/{clinic.id}/templates/reset", headers=hx, data=_form())
    assert reset.status_code == 200 and "the built-in template applies again" in reset.text
    assert _templates(db) == []
    again = client.post(f"/admin/tenants/{clinic.id}/templates/reset", headers=hx, data=_form())
    assert again.status_code == 404


def test_send_a_test_queues_an_audited_message_to_the_address(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    smtp: Server,  # noqa: F811
) -> None:
    hx = _signed_in(client, clinic)
    url = f"/admin/tenants/{clinic.id}/templates/test"
    none = client.post(url, headers=hx, data=_form(to_address="tester@example.net"))
    assert none.status_code == 422 and "no enabled integration" in none.text
    _email_integration(client, clinic, smtp.port)
    bad = client.post(url, headers=hx, data=_form(to_address="not an address"))
    assert bad.status_code == 422 and 'id="to-address-error"' in bad.text
    client.post(
        f"/admin/tenants/{clinic.id}/templates/save",
        headers=hx,
        data=_form(subject="Test of {{ clinic.name }}", body="Hello {{ patient.first_name }}"),
    )
    sent = client.post(url, headers=hx, data=_form(to_address="tester@example.net"))
    assert sent.status_code == 200 and "queued to t***@example.net" in sent.text
    with db.read() as session:
        message = session.scalars(sa.select(Message)).one()
        assert (message.patient_id, message.kind, message.status, message.dedupe_key) == (
            None, KIND, "queued", None,
        )  # fmt: skip
        assert message.subject == "Test of Maple Family Clinic"
        assert session.scalars(sa.select(Job).where(Job.kind == "messaging.send")).one()
        assert session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "message.test")
        ).one()
    assert run_jobs(db, settings, "messaging.send") == 1
    assert smtp.sink.only()["Subject"] == "Test of Maple Family Clinic"
    log = client.get(f"/admin/tenants/{clinic.id}/messages")
    assert log.status_code == 200 and "t***@example.net" in log.text
    assert "tester@example.net" not in log.text and "Hello Alex" not in log.text
    assert 'data-status="sent"' in log.text and "queued <span" in log.text


def test_messages_log_filters_and_pages_newest_first(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    smtp: Server,  # noqa: F811
) -> None:
    _signed_in(client, clinic)
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic, "quinn@example.com")
    for n in range(27):
        body = {"patient_id": patient, "channel": "email", "subject": f"Note {n}", "body": "x"}
        assert client.post("/api/v1/messages", json=body, headers=clinic.headers).status_code == 202
    first = client.get(f"/admin/tenants/{clinic.id}/messages")
    assert first.text.index("Note 26") < first.text.index("Note 25")
    assert "Note 1<" not in first.text and "Older messages" in first.text
    assert "q***@example.com" in first.text and "quinn@example.com" not in first.text
    older = client.get(
        f"/admin/tenants/{clinic.id}/messages",
        params={"before": first.text.split("before=")[-1].split('"')[0]},
        headers={"HX-Request": "true"},
    )
    assert older.text.lstrip().startswith('<section class="card" id="messages"')
    assert "Note 1<" in older.text and "Note 0<" in older.text and "Note 26" not in older.text
    assert (
        "Note 3"
        in client.get(f"/admin/tenants/{clinic.id}/messages", params={"patient_id": patient}).text
    )
    assert (
        "No messages match"
        in client.get(
            f"/admin/tenants/{clinic.id}/messages", params={"patient_id": "pat_other"}
        ).text
    )
    assert (
        "No messages match"
        in client.get(f"/admin/tenants/{clinic.id}/messages", params={"channel": "sms"}).text
    )
    assert (
        "Note 3"
        in client.get(
            f"/admin/tenants/{clinic.id}/messages", params={"status": "queued", "channel": "email"}
        ).text
    )


def test_permissions_and_csrf(client: TestClient, clinic: Clinic, db: Database) -> None:
    hx = _signed_in(client, clinic, role="front_desk")  # messages:read, not tenant:write
    page = client.get(f"/admin/tenants/{clinic.id}/templates")
    assert page.status_code == 200 and ">Save</button>" not in page.text
    assert "Send a test" not in page.text.split('id="test-heading"')[1].split("</h2>")[1]
    assert client.get(f"/admin/tenants/{clinic.id}/messages").status_code == 200
    preview = client.post(
        f"/admin/tenants/{clinic.id}/templates/preview",
        headers=hx,
        data=_form(subject="x", body="y"),
    )
    assert preview.status_code == 200
    for action in ("save", "reset", "test"):
        denied = client.post(
            f"/admin/tenants/{clinic.id}/templates/{action}",
            headers=hx,
            data=_form(subject="x", body="y", to_address="tester@example.net"),
        )
        assert denied.status_code == 403, action
    assert _templates(db) == []


def test_forms_need_the_csrf_token(client: TestClient, clinic: Clinic, db: Database) -> None:
    _signed_in(client, clinic)
    forged = client.post(
        f"/admin/tenants/{clinic.id}/templates/save",
        headers={"HX-Request": "true", "X-CSRF-Token": "forged"},
        data=_form(subject="x", body="y"),
    )
    assert forged.status_code == 403 and _templates(db) == []


def test_a_role_without_messages_read_sees_neither_page_nor_links(
    client: TestClient, clinic: Clinic
) -> None:
    _user(client, clinic, "billing@maple.example.com", role="billing")
    _login(client, "billing@maple.example.com")
    assert ">Messages</a>" not in client.get(f"/admin/tenants/{clinic.id}").text
    assert client.get(f"/admin/tenants/{clinic.id}/messages").status_code == 403
    assert client.get(f"/admin/tenants/{clinic.id}/templates").status_code == 403


def test_another_clinics_messages_and_templates_are_not_shown(
    client: TestClient,
    make_clinic: Callable[..., Clinic],
    db: Database,
    smtp: Server,  # noqa: F811
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    _email_integration(client, birch, smtp.port)
    patient = _patient(client, birch, "robin@example.com")
    body = {"patient_id": patient, "channel": "email", "subject": "Birch secret", "body": "x"}
    assert client.post("/api/v1/messages", json=body, headers=birch.headers).status_code == 202
    hx = _signed_in(client, birch, who="birch")
    client.post(
        f"/admin/tenants/{birch.id}/templates/save",
        headers=hx,
        data=_form(subject="Birch wording", body="Birch body"),
    )
    client.cookies.clear()
    hx = _signed_in(client, maple)
    assert client.get(f"/admin/tenants/{birch.id}/messages").status_code == 404
    assert client.get(f"/admin/tenants/{birch.id}/templates").status_code == 404
    own = client.get(f"/admin/tenants/{maple.id}/messages")
    assert "Birch secret" not in own.text and "r***@example.com" not in own.text
    assert "Birch wording" not in client.get(f"/admin/tenants/{maple.id}/templates").text
    # Posting to the other clinic's URL with one's own token is refused, too.
    crossed = client.post(f"/admin/tenants/{birch.id}/templates/reset", headers=hx, data=_form())
    assert crossed.status_code == 404
    assert [t.subject for t in _templates(db)] == ["Birch wording"]
