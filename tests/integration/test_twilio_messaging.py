"""Twilio SMS/WhatsApp: sending through a fake Twilio Messages API (httpx MockTransport
following the documented API), error mapping, status callbacks and patient replies
signed with the official ``twilio`` SDK's RequestValidator and posted to the real
inbox ``POST /webhooks/{integration_id}``, and a send cut short reconciled by lookup."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging import twilio_events, twilio_sender
from clinicbridge.messaging.clinic_templates import sample_variables
from clinicbridge.messaging.models import Message, MessageEvent
from clinicbridge.messaging.service import SEND_KIND
from clinicbridge.patients.models import CommunicationConsent
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings
from clinicbridge.webhooks.inbox import PROCESS_KIND
from tests.conftest import Clinic

API = "/api/v1"
ACCOUNT = "AC" + "7" * 32
TOKEN = "fake-twilio-auth-token-0000"
FROM = "+15145550100"
PHONE = "+15145550199"
TWILIO_API = "https://api.twilio.test"


@dataclass
class FakeTwilio:
    """The Messages API as documented: create (form) and list (To, PageSize), Basic auth."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, str]] = field(default_factory=list)
    auths: list[str] = field(default_factory=list)
    # what the next create requests get instead of success: a status (+ error code) or
    # an exception (a timeout after Twilio accepted: the message is created anyway)
    failures: list[tuple[int, int | None] | Exception] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        self.auths.append(request.headers.get("authorization", ""))
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"code": 20003, "message": "Authenticate"})
        if request.url.path != path:
            return httpx.Response(404, json={"code": 20404, "message": "not found"})
        if request.method == "GET":
            to = request.url.params.get("To")
            page = [m for m in reversed(self.messages) if m["to"] == to]
            return httpx.Response(
                200, json={"messages": page[: int(request.url.params["PageSize"])]}
            )
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        fields = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        self.posts.append(fields)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                self._create(fields)
                raise failure
            status, code = failure
            body = {"code": code, "message": f"The 'To' number {fields['To']} is bad"}
            headers = {"Retry-After": "0"} if status == 429 else {}
            return httpx.Response(
                status, json=body if code else {"message": "oops"}, headers=headers
            )
        return httpx.Response(201, json=self._create(fields))

    def _create(self, fields: dict[str, str]) -> dict[str, Any]:
        message = {
            "sid": f"SM{len(self.messages) + 1:032x}",
            "to": fields["To"],
            "from": fields.get("From"),
            # With a ContentSid, Twilio renders the approved template itself.
            "body": fields.get("Body", f"[content {fields.get('ContentSid')}]"),
            "status": "queued",
            "direction": "outbound-api",
            "date_created": format_datetime(datetime.now(UTC), usegmt=True),
            "date_sent": None,
        }
        self.messages.append(message)
        return message


@pytest.fixture
def fake(db: Database, settings: Settings) -> Iterator[FakeTwilio]:
    api = FakeTwilio()
    twilio_sender.configure(
        db=db, transport=httpx.MockTransport(api), public_base_url=settings.public_base_url
    )
    yield api
    twilio_sender.configure()


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _twilio(client: TestClient, clinic: Clinic, **settings: Any) -> str:
    body = {
        "connector": "twilio",
        "name": "Clinic SMS",
        "credentials": {"account_sid": ACCOUNT, "auth_token": TOKEN},
        "settings": {"api_base": TWILIO_API, "from_number": FROM, **settings},
    }
    return str(
        _ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"]
    )


def _patient(client: TestClient, clinic: Clinic, phone: str = PHONE) -> str:
    body = {
        "first_name": "Rene",
        "last_name": "Sample",
        "date_of_birth": "1980-05-06",
        "phone": phone,
    }
    return str(
        _ok(client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers), 201)["id"]
    )


def _queue(
    client: TestClient, clinic: Clinic, patient: str, body: str, channel: str = "sms"
) -> Any:
    message = {"patient_id": patient, "channel": channel, "body": body}
    return _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)


def run(db: Database, settings: Settings, kind: str, *, attempt: int = 1) -> int:
    """Run the pending jobs of ``kind`` once, in this thread, then mark them done."""
    with db.read() as session:
        jobs = session.scalars(sa.select(Job).where(Job.kind == kind, Job.state == "pending")).all()
    handler = registry.get(kind)
    assert handler is not None
    for job in jobs:
        context = JobContext(
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
        try:
            handler.handler(context)
        finally:
            with db.write() as session:
                session.execute(sa.update(Job).where(Job.id == job.id).values(state="succeeded"))
    return len(jobs)


def _message(db: Database, message_id: str) -> Message:
    with db.read() as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


def _post_webhook(
    client: TestClient, settings: Settings, integration: str, params: dict[str, str]
) -> None:
    url = f"{settings.public_base_url}/webhooks/{integration}"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = client.post(
        f"/webhooks/{integration}",
        content=urlencode(params),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 200, response.text


def _status(client: TestClient, settings: Settings, integration: str, sid: str, status: str,
            **extra: str) -> None:  # fmt: skip
    params = {"MessageSid": sid, "MessageStatus": status, "SmsStatus": status, "To": PHONE,
              "From": FROM, "AccountSid": ACCOUNT, "ErrorCode": "", **extra}  # fmt: skip
    _post_webhook(client, settings, integration, params)


def _reply(client: TestClient, settings: Settings, integration: str, body: str,
           sender: str = PHONE, n: list[int] = [0]) -> None:  # noqa: B006  # fmt: skip
    n[0] += 1
    params = {"MessageSid": f"SM{'f' * 24}{n[0]:08d}", "SmsSid": "x", "AccountSid": ACCOUNT,
              "From": sender, "To": FROM, "Body": body, "NumMedia": "0"}  # fmt: skip
    _post_webhook(client, settings, integration, params)


# --- sending ---------------------------------------------------------------------------


def test_an_sms_is_posted_as_twilio_documents_and_the_sid_recorded(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    queued = _queue(client, clinic, patient, "Your appointment is tomorrow at 9:00.")
    assert queued["provider"] == "twilio"
    assert run(db, settings, SEND_KIND) == 1
    [post] = fake.posts
    assert post == {
        "To": PHONE,
        "From": FROM,
        "Body": "Your appointment is tomorrow at 9:00.",
        "StatusCallback": f"{settings.public_base_url}/webhooks/{integration}",
    }
    token = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert fake.auths == [f"Basic {token}"]
    sent = _message(db, queued["id"])
    assert sent.status == "sent" and sent.provider_message_id == fake.messages[0]["sid"]
    with db.read() as session:  # through clinicbridge.http: one call log row
        from clinicbridge.http.models import HttpCall

        calls = session.scalars(
            sa.select(HttpCall).where(HttpCall.integration == integration)
        ).all()
    assert [c.operation for c in calls] == ["messages.create"]


def test_whatsapp_prefixes_addresses_and_a_messaging_service_replaces_from(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    service = "MG" + "a" * 32
    body = {
        "connector": "twilio",
        "name": "WhatsApp",
        "credentials": {"account_sid": ACCOUNT, "auth_token": TOKEN},
        "settings": {"api_base": TWILIO_API, "messaging_service_sid": service},
    }
    _ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    patient = _patient(client, clinic)
    _queue(client, clinic, patient, "Bonjour", channel="whatsapp")
    run(db, settings, SEND_KIND)
    [post] = fake.posts
    assert post["To"] == f"whatsapp:{PHONE}" and post["MessagingServiceSid"] == service
    assert "From" not in post


@pytest.mark.parametrize(
    ("failure", "retryable", "words"),
    [
        ((500, None), True, "HTTP 500"),
        ((429, None), True, "HTTP 429"),
        ((400, 21211), False, "not a valid phone number (Twilio error 21211, HTTP 400)"),
        ((400, 21610), False, "unsubscribed (replied STOP)"),
        ((401, 20003), False, "refused the credentials"),
        (httpx.ConnectError("down"), True, "ConnectError"),
    ],
)
def test_twilio_errors_map_to_retryable_or_final_failures(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    fake: FakeTwilio,
    failure: tuple[int, int | None] | Exception,
    retryable: bool,
    words: str,
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    queued = _queue(client, clinic, patient, "Hello")
    fake.failures = [failure] * 3
    if isinstance(failure, Exception):  # refused before Twilio saw it: nothing created
        fake.failures = []

        def down(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("down", request=request)

        twilio_sender.configure(
            db=db, transport=httpx.MockTransport(down), public_base_url=settings.public_base_url
        )
    if retryable:
        with pytest.raises(Exception, match=words.split()[-1]):
            run(db, settings, SEND_KIND)
        row = _message(db, queued["id"])
        assert row.status == "queued"  # nothing went out: the job sends it later
    else:
        run(db, settings, SEND_KIND)
        row = _message(db, queued["id"])
        assert row.status == "failed" and words in (row.error or "")
        assert PHONE not in (row.error or "")  # Twilio's text (quoting the number) not kept
    assert fake.messages == []


# --- status callbacks ----------------------------------------------------------------------


def test_status_callbacks_move_the_status_forward_only_with_price_and_error(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    first = _queue(client, clinic, patient, "One")
    second = _queue(client, clinic, patient, "Two")
    run(db, settings, SEND_KIND)
    sid_one = _message(db, first["id"]).provider_message_id
    sid_two = _message(db, second["id"]).provider_message_id
    assert sid_one and sid_two
    _status(client, settings, integration, sid_one, "delivered", Price="-0.00790", PriceUnit="USD")
    _status(client, settings, integration, sid_one, "sent")  # late, out of order
    _status(client, settings, integration, sid_two, "undelivered", ErrorCode="30003")
    _status(client, settings, integration, "SM" + "9" * 32, "delivered")  # not ours
    assert run(db, settings, PROCESS_KIND) == 4
    one, two = _message(db, first["id"]), _message(db, second["id"])
    assert one.status == "delivered" and (one.cost_minor, one.cost_currency) == (1, "USD")
    assert two.status == "undelivered" and "30003" in (two.error or "")
    with db.read() as session:
        timeline = session.scalars(
            sa.select(MessageEvent.status)
            .where(MessageEvent.message_id == first["id"])
            .order_by(MessageEvent.at, MessageEvent.id)
        ).all()
    assert list(timeline) == ["queued", "sending", "sent", "delivered", "sent"]


def test_a_callback_for_another_clinics_message_changes_nothing(
    client: TestClient,
    clinic: Clinic,
    make_clinic: Callable[..., Clinic],
    db: Database,
    settings: Settings,
    fake: FakeTwilio,
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    queued = _queue(client, clinic, patient, "Mine")
    run(db, settings, SEND_KIND)
    sid = _message(db, queued["id"]).provider_message_id
    assert sid
    other = make_clinic("Birch Clinic")
    other_integration = _twilio(client, other)
    _status(client, settings, other_integration, sid, "failed")
    run(db, settings, PROCESS_KIND)
    assert _message(db, queued["id"]).status == "sent"


# --- replies: STOP, START, C, R ------------------------------------------------------------


def _consents(db: Database, patient: str) -> list[tuple[str, bool, str]]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(CommunicationConsent)
            .where(CommunicationConsent.patient_id == patient)
            .order_by(CommunicationConsent.recorded_at, CommunicationConsent.id)
        ).all()
    return [(r.channel, r.granted, r.source) for r in rows]


@pytest.mark.parametrize("word", ["STOP", "stop ", "Arrêt", "ARRET", "unsubscribe", "Quit."])
def test_stop_in_english_or_french_suppresses_later_messages_and_start_resumes(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    fake: FakeTwilio,
    word: str,
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    stranger = _patient(client, clinic, phone="+15145550177")
    before = _queue(client, clinic, patient, "Queued before the STOP")
    _reply(client, settings, integration, word)
    _reply(client, settings, integration, "STOP", sender="+15145550155")  # unknown number
    run(db, settings, PROCESS_KIND)
    assert _consents(db, patient) == [("sms", False, f"sms {twilio_events.keyword(word).upper()}")]
    assert _consents(db, stranger) == []
    later = _queue(client, clinic, patient, "A reminder")
    assert later["status"] == "suppressed"
    run(db, settings, SEND_KIND)
    assert fake.posts == []
    assert _message(db, before["id"]).status == "suppressed"  # checked again by the send job
    _reply(client, settings, integration, "HELP")  # Twilio answers HELP: nothing here
    _reply(client, settings, integration, "Début")
    run(db, settings, PROCESS_KIND)
    assert [c[1] for c in _consents(db, patient)] == [False, True]
    resumed = _queue(client, clinic, patient, "A reminder")
    assert resumed["status"] == "queued"
    run(db, settings, SEND_KIND)
    assert len(fake.posts) == 1


def test_a_whatsapp_stop_opts_out_of_whatsapp_and_sms(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    _reply(client, settings, integration, "stop", sender=f"whatsapp:{PHONE}")
    _reply(client, settings, integration, "STOP", sender=f"whatsapp:{PHONE}")  # twice: one row each
    run(db, settings, PROCESS_KIND)
    assert sorted(_consents(db, patient)) == [
        ("sms", False, "whatsapp STOP"),
        ("whatsapp", False, "whatsapp STOP"),
    ]
    _reply(client, settings, integration, "START", sender=f"whatsapp:{PHONE}")
    run(db, settings, PROCESS_KIND)
    latest = {channel: granted for channel, granted, _ in _consents(db, patient)}
    assert latest == {"sms": True, "whatsapp": True}


def _schedule(client: TestClient, headers: dict[str, str]) -> tuple[str, str]:
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


def _book(client: TestClient, clinic: Clinic, patient: str, days: int) -> str:
    provider, service = _schedule(client, clinic.headers)
    start = (datetime.now(UTC) + timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    body = {"service_id": service, "provider_id": provider, "start": start.isoformat(),
            "patient_id": patient}  # fmt: skip
    return str(_ok(client.post(f"{API}/bookings", json=body, headers=clinic.headers), 201)["id"])


def test_c_confirms_the_next_booking_and_r_records_a_reschedule_request(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    integration = _twilio(client, clinic)
    patient = _patient(client, clinic)
    later = _book(client, clinic, patient, days=5)
    sooner = _book(client, clinic, patient, days=2)
    _reply(client, settings, integration, "c")
    run(db, settings, PROCESS_KIND)
    with db.read() as session:
        statuses = {b.id: b.status for b in session.scalars(sa.select(Booking))}
    assert statuses == {sooner: "confirmed", later: "booked"}
    _reply(client, settings, integration, "Oui")  # confirming again is no error
    _reply(client, settings, integration, "R")
    run(db, settings, PROCESS_KIND)
    with db.read() as session:
        asked = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "booking.reschedule_requested")
        ).all()
        confirmed_by = session.scalars(
            sa.select(AuditEvent.actor_id).where(AuditEvent.resource_id == sooner)
        ).all()
    assert [(a.resource_id, a.actor_id) for a in asked] == [(sooner, "sms_reply")]
    assert "sms_reply" in confirmed_by


# --- a send cut short ----------------------------------------------------------------------


def _cut_short(db: Database, message_id: str) -> None:
    with db.write() as session:  # a worker marked it sending, then died before settling
        row = session.get(Message, message_id)
        assert row is not None
        row.status, row.send_started_at = "sending", datetime.now(UTC) - timedelta(seconds=5)


def test_a_send_cut_short_that_reached_twilio_is_found_not_resent(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    old = _queue(client, clinic, patient, "Same words")  # an identical earlier message
    run(db, settings, SEND_KIND)
    queued = _queue(client, clinic, patient, "Same words")
    _cut_short(db, queued["id"])
    fake._create({"To": PHONE, "From": FROM, "Body": "Same words"})  # what Twilio accepted
    run(db, settings, SEND_KIND, attempt=2)
    assert len(fake.posts) == 1  # only the earlier message's: no second POST
    found = _message(db, queued["id"])
    assert found.status == "sent" and found.provider_message_id == fake.messages[1]["sid"]
    assert _message(db, old["id"]).provider_message_id == fake.messages[0]["sid"]


def test_a_send_cut_short_before_twilio_is_sent_once(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    queued = _queue(client, clinic, patient, "Only once")
    _cut_short(db, queued["id"])
    run(db, settings, SEND_KIND, attempt=2)
    assert [p["Body"] for p in fake.posts] == ["Only once"]
    sent = _message(db, queued["id"])
    assert sent.status == "sent" and sent.provider_message_id == fake.messages[0]["sid"]


def test_a_timeout_after_twilio_accepted_is_found_instead_of_retried(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    queued = _queue(client, clinic, patient, "Slow network")
    fake.failures = [httpx.ReadTimeout("slow")]
    run(db, settings, SEND_KIND)
    assert len(fake.posts) == 1 and len(fake.messages) == 1
    sent = _message(db, queued["id"])
    assert sent.status == "sent" and sent.provider_message_id == fake.messages[0]["sid"]


# --- WhatsApp approved templates ----------------------------------------------------------


def test_a_whatsapp_template_with_a_provider_template_id_sends_the_approved_template(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: FakeTwilio
) -> None:
    _twilio(client, clinic)
    patient = _patient(client, clinic)
    sid = "HX" + "b" * 32
    template = {
        "body": "Hi {{ patient.first_name }}, see you {{ booking.start_text }}.",
        "provider_template_id": sid,
        "provider_template_variables": ["patient.first_name", "booking.start_text"],
    }
    saved = client.put(f"{API}/message-templates/booking.reminder/whatsapp/en", json=template,
                       headers=clinic.headers)  # fmt: skip
    assert _ok(saved)["provider_template_id"] == sid
    variables = sample_variables("booking.reminder", "en")
    message = {"patient_id": patient, "channel": "whatsapp", "template": "booking.reminder",
               "variables": variables}  # fmt: skip
    queued = _ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202)
    run(db, settings, SEND_KIND)
    post = fake.posts[-1]
    assert "Body" not in post and post["ContentSid"] == sid
    assert json.loads(post["ContentVariables"]) == {
        "1": "Alex",
        "2": variables["booking"]["start_text"],
    }
    assert _message(db, queued["id"]).body.startswith("Hi Alex, see you ")  # our copy
    preview = {**template, "kind": "booking.reminder", "channel": "whatsapp"}
    shown = _ok(client.post(f"{API}/message-templates/preview", json=preview,
                            headers=clinic.headers))  # fmt: skip
    assert shown["provider_template"]["variables"]["1"] == "Alex"


@pytest.mark.parametrize(
    ("channel", "change", "field"),
    [
        ("sms", {}, "provider_template_id"),
        ("email", {}, "provider_template_id"),  # an e-mail one is a SendGrid d-... id
        (
            "whatsapp",
            {"provider_template_variables": ["patient.last_name"]},
            "provider_template_variables.0",
        ),
        ("whatsapp", {"provider_template_variables": ["nope"]}, "provider_template_variables.0"),
        ("whatsapp", {"provider_template_id": "HX123"}, "provider_template_id"),
        ("whatsapp", {"provider_template_id": None}, "provider_template_variables"),
    ],
)
def test_a_bad_content_template_names_its_field(
    client: TestClient, clinic: Clinic, channel: str, change: dict[str, Any], field: str
) -> None:
    template = {"body": "Hi {{ patient.first_name }}", "provider_template_id": "HX" + "c" * 32,
                "provider_template_variables": ["patient.first_name"], **change}  # fmt: skip
    if channel == "email":
        template["subject"] = "Your visit"
    answer = client.put(f"{API}/message-templates/booking.reminder/{channel}/en",
                        json=template, headers=clinic.headers)  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]
