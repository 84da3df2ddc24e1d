"""E-mail through SendGrid, Resend and Mailgun: each send API against a fake provider at
the HTTP level (httpx MockTransport), checked field by field against the providers'
documented requests; error mapping (what may be retried, what is an unknown outcome);
and their event webhooks through the real inbox (``POST /webhooks/{id}``), signed as
the providers sign (SendGrid's SDK and ``standardwebhooks`` verify them as oracles),
including events out of order and a hard bounce or complaint that suppresses the
next message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as token_source
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message as MimeMessage
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import standardwebhooks
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sendgrid.helpers.eventwebhook import EventWebhook

from clinicbridge.core.clock import SystemClock
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging import email_api_senders as senders
from clinicbridge.messaging.clinic_templates import sample_variables
from clinicbridge.messaging.models import Message, MessageEvent
from clinicbridge.messaging.providers import SENDERS, OutcomeUnknownError, Outgoing
from clinicbridge.messaging.service import SEND_KIND
from clinicbridge.patients.models import CommunicationConsent
from clinicbridge.settings import Settings
from clinicbridge.webhooks.inbox import PROCESS_KIND
from tests.conftest import Clinic

API = "/api/v1"
SENDGRID_KEY = "SG.fake-key-for-tests.0123456789abcdefghijklmnopqrstuv"
RESEND_KEY = "re_fake_key_for_tests_0123456789"
MAILGUN_KEY = "key-fake0123456789abcdef0123456789"
RESEND_WHSEC = "whsec_" + base64.b64encode(b"resend-webhook-secret-for-tests!").decode()
MAILGUN_SIGNING_KEY = "mailgun-signing-key-for-tests-0123"
SG_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(
    SG_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
ICS = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nEND:VCALENDAR\r\n"


# --- the fake provider ----------------------------------------------------------------------


@dataclass
class Fake:
    """Answers every request with the next queued response (or ``default``)."""

    default: Callable[[httpx.Request], httpx.Response]
    queued: list[Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.queued.pop(0) if self.queued else self.default
        return answer(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def provider_ok(request: httpx.Request) -> httpx.Response:
    """Each provider's documented success answer, with a fresh id."""
    host = request.url.host
    suffix = token_source.token_hex(6)
    if "sendgrid" in host:
        return httpx.Response(202, headers={"X-Message-Id": f"sgid{suffix}"})
    if "resend" in host:
        return httpx.Response(200, json={"id": f"4ef9a417-02e9-4d39-ad75-{suffix}"})
    return httpx.Response(
        200, json={"id": f"<20261124.{suffix}@mg.clinic.example>", "message": "Queued. Thank you."}
    )


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clinicbridge.http.client.backoff_delay", lambda *a: 0.0)


@pytest.fixture
def fake(db: Database) -> Iterator[Fake]:
    provider = Fake(provider_ok)
    senders.bind(db, transport=provider.transport)
    yield provider
    senders.bind(None)


SETTINGS: dict[str, dict[str, Any]] = {
    "sendgrid": {"from_email": "rdv@clinic.example", "from_name": "Maple Clinic"},
    "resend": {"from_email": "rdv@clinic.example", "from_name": "Maple Clinic"},
    "mailgun": {
        "from_email": "rdv@mg.clinic.example",
        "from_name": "Maple Clinic",
        "domain": "mg.clinic.example",
    },
}
KEYS = {"sendgrid": SENDGRID_KEY, "resend": RESEND_KEY, "mailgun": MAILGUN_KEY}


def context(db: Database, fake: Fake, provider: str, **settings: Any) -> ConnectorContext:
    defaults = {
        "sendgrid": "https://api.sendgrid.com",
        "resend": "https://api.resend.com",
        "mailgun": "https://api.mailgun.net",
    }
    return ConnectorContext(
        db=db,
        tenant_id=None,  # type: ignore[arg-type]  # no clinic: the call log takes None
        integration_id=f"int_{provider}_{token_source.token_hex(4)}",  # a fresh breaker
        credentials={"api_key": Secret(KEYS[provider])},
        settings={"api_base": defaults[provider], **SETTINGS[provider], **settings},
        transport=fake.transport,
    )


def outgoing(provider: str, **changes: Any) -> Outgoing:
    values: dict[str, Any] = {
        "message_id": "msg_01JDTESTMESSAGE000000000001",
        "tenant_id": "ten_test",
        "integration_id": f"int_{provider}",
        "provider": provider,
        "channel": "email",
        "to_address": "quinn@example.com",
        "subject": "Your appointment",
        "body": "See you Tuesday at 9:00.",
        "html": "<p>See you <b>Tuesday</b> at 9:00.</p>",
        "language": "en",
        "attachments": [
            {
                "filename": "appointment.ics",
                "content": ICS,
                "content_type": "text/calendar; charset=utf-8; method=REQUEST",
            }
        ],
        "settings": {},
        "credentials": {},
    }
    values.update(changes)
    return Outgoing(**values)


SEND = {
    "sendgrid": senders.send_sendgrid,
    "resend": senders.send_resend,
    "mailgun": senders.send_mailgun,
}


# --- requests, per the providers' documentation -------------------------------------------


def test_sendgrid_posts_v3_mail_send_with_custom_args_and_returns_x_message_id(
    db: Database,
) -> None:
    fake = Fake(lambda r: httpx.Response(202, headers={"X-Message-Id": "W9fGL1nYQkuZ1T7yXJ0y4w"}))
    provider_id = senders.send_sendgrid(context(db, fake, "sendgrid"), outgoing("sendgrid"))
    assert provider_id == "W9fGL1nYQkuZ1T7yXJ0y4w"
    [request] = fake.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.sendgrid.com/v3/mail/send")
    assert request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "personalizations": [{"to": [{"email": "quinn@example.com"}]}],
        "from": {"email": "rdv@clinic.example", "name": "Maple Clinic"},
        "subject": "Your appointment",
        "content": [
            {"type": "text/plain", "value": "See you Tuesday at 9:00."},
            {"type": "text/html", "value": "<p>See you <b>Tuesday</b> at 9:00.</p>"},
        ],
        "attachments": [
            {
                "content": base64.b64encode(ICS.encode()).decode(),
                "type": "text/calendar",
                "filename": "appointment.ics",
                "disposition": "attachment",
            }
        ],
        "custom_args": {"cb_message_id": "msg_01JDTESTMESSAGE000000000001"},
    }


def test_sendgrid_uses_the_clinics_dynamic_template_with_the_message_variables(
    db: Database,
) -> None:
    fake = Fake(lambda r: httpx.Response(202, headers={"X-Message-Id": "dyn-1"}))
    variables = {"patient": {"first_name": "Quinn"}, "booking": {"start_text": "Tue 9:00"}}
    dynamic = {"id": "d-" + "0" * 32, "variables": variables}
    senders.send_sendgrid(
        context(db, fake, "sendgrid"), outgoing("sendgrid", provider_template=dynamic)
    )
    sent = json.loads(fake.requests[0].content)
    assert sent["template_id"] == "d-" + "0" * 32
    assert sent["personalizations"] == [
        {"to": [{"email": "quinn@example.com"}], "dynamic_template_data": variables}
    ]
    assert "subject" not in sent and "content" not in sent  # the template has its own
    assert sent["custom_args"] == {"cb_message_id": "msg_01JDTESTMESSAGE000000000001"}


def test_resend_posts_emails_with_our_id_as_idempotency_key(db: Database) -> None:
    fake = Fake(lambda r: httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}))
    provider_id = senders.send_resend(context(db, fake, "resend"), outgoing("resend"))
    assert provider_id == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
    [request] = fake.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.resend.com/emails")
    assert request.headers["Authorization"] == f"Bearer {RESEND_KEY}"
    assert request.headers["Idempotency-Key"] == "msg_01JDTESTMESSAGE000000000001"
    assert json.loads(request.content) == {
        "from": "Maple Clinic <rdv@clinic.example>",
        "to": ["quinn@example.com"],
        "subject": "Your appointment",
        "text": "See you Tuesday at 9:00.",
        "html": "<p>See you <b>Tuesday</b> at 9:00.</p>",
        "headers": {"Content-Language": "en"},
        "tags": [{"name": "cb_message_id", "value": "msg_01JDTESTMESSAGE000000000001"}],
        "attachments": [
            {
                "filename": "appointment.ics",
                "content": base64.b64encode(ICS.encode()).decode(),
                "content_type": "text/calendar; charset=utf-8; method=REQUEST",
            }
        ],
    }


def form_parts(request: httpx.Request) -> list[MimeMessage]:
    """multipart/form-data parsed by the standard library's MIME parser."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    parsed = message_from_bytes(head + request.content)
    assert parsed.is_multipart() and not parsed.defects
    return list(parsed.get_payload())


def test_mailgun_posts_form_data_with_basic_auth_and_returns_the_id_without_brackets(
    db: Database,
) -> None:
    fake = Fake(
        lambda r: httpx.Response(
            200, json={"id": "<msg_01JDTEST@mg.clinic.example>", "message": "Queued. Thank you."}
        )
    )
    provider_id = senders.send_mailgun(context(db, fake, "mailgun"), outgoing("mailgun"))
    assert provider_id == "msg_01JDTEST@mg.clinic.example"
    [request] = fake.requests
    assert (request.method, str(request.url)) == (
        "POST",
        "https://api.mailgun.net/v3/mg.clinic.example/messages",
    )
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert (scheme, base64.b64decode(token).decode()) == ("Basic", f"api:{MAILGUN_KEY}")
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    parts = form_parts(request)
    fields = {
        p.get_param("name", header="content-disposition"): p.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for p in parts
        if p.get_filename() is None
    }
    assert fields == {
        "from": '"Maple Clinic" <rdv@mg.clinic.example>',
        "to": "quinn@example.com",
        "subject": "Your appointment",
        "text": "See you Tuesday at 9:00.",
        "html": "<p>See you <b>Tuesday</b> at 9:00.</p>",
        "h:Message-Id": "<msg_01JDTESTMESSAGE000000000001@mg.clinic.example>",
        "v:cb_message_id": "msg_01JDTESTMESSAGE000000000001",
        "h:Content-Language": "en",
    }
    [attachment] = [p for p in parts if p.get_filename() is not None]
    assert attachment.get_param("name", header="content-disposition") == "attachment"
    assert attachment.get_filename() == "appointment.ics"
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_payload(decode=True) == ICS.encode()


def test_mailgun_eu_region_is_the_api_base(db: Database) -> None:
    fake = Fake(provider_ok)
    ctx = context(db, fake, "mailgun", api_base="https://api.eu.mailgun.net")
    senders.send_mailgun(ctx, outgoing("mailgun", attachments=[]))
    assert str(fake.requests[0].url) == "https://api.eu.mailgun.net/v3/mg.clinic.example/messages"
    assert not [p for p in form_parts(fake.requests[0]) if p.get_filename()]


@pytest.mark.parametrize("provider", ["sendgrid", "resend", "mailgun"])
def test_without_from_email_nothing_is_sent(db: Database, provider: str) -> None:
    fake = Fake(provider_ok)
    ctx = context(db, fake, provider)
    del ctx.settings["from_email"]
    with pytest.raises(ExternalServiceError) as caught:
        SEND[provider](ctx, outgoing(provider))
    assert not caught.value.retryable and "from_email" in caught.value.detail
    assert fake.requests == []


# --- error mapping --------------------------------------------------------------------------


def refusal(provider: str, status: int) -> Callable[[httpx.Request], httpx.Response]:
    echo = f"bad request, key {KEYS[provider]} rejected"  # a provider echoing the key
    bodies = {
        "sendgrid": {"errors": [{"message": echo, "field": "from.email", "help": None}]},
        "resend": {"statusCode": status, "name": "validation_error", "message": echo},
        "mailgun": {"message": echo},
    }
    return lambda r: httpx.Response(status, json=bodies[provider])


@pytest.mark.parametrize("provider", ["sendgrid", "resend", "mailgun"])
@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_a_4xx_is_final_with_a_clear_message_and_never_the_key(
    db: Database, provider: str, status: int
) -> None:
    fake = Fake(refusal(provider, status))
    with pytest.raises(ExternalServiceError) as caught:
        SEND[provider](context(db, fake, provider), outgoing(provider))
    error = caught.value
    assert not error.retryable and error.status_code == status
    assert f"HTTP {status}" in error.detail and "rejected" in error.detail
    assert KEYS[provider] not in error.detail and KEYS[provider] not in str(error)
    if status in (401, 403):
        assert "refused the API key" in error.detail
    assert len(fake.requests) == 1


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


def refused_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def status(code: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda r: httpx.Response(code, json={"message": "busy"}, headers={"Retry-After": "0"})


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun"])
@pytest.mark.parametrize(
    ("answer", "retryable", "attempts"),
    [
        (status(429), True, 3),  # rate limited: nothing accepted; retried in-process, then the job
        (status(503), True, 3),
        (refused_connection, True, 3),
        (status(500), False, 1),  # may have been accepted: never resent
        (status(502), False, 1),
        (status(504), False, 1),
        (timeout, False, 1),
    ],
)
def test_without_an_idempotency_key_only_failures_before_acceptance_are_retryable(
    db: Database,
    provider: str,
    answer: Callable[[httpx.Request], httpx.Response],
    retryable: bool,
    attempts: int,
) -> None:
    fake = Fake(answer)
    with pytest.raises(ExternalServiceError) as caught:
        SEND[provider](context(db, fake, provider), outgoing(provider))
    # "not retryable" here: maybe accepted, so OutcomeUnknownError: the send job keeps the
    # message ``sending`` and, these providers having no lookup, marks it ``unknown``.
    assert isinstance(caught.value, OutcomeUnknownError) is not retryable
    assert len(fake.requests) == attempts
    if not retryable:
        assert "outcome unknown" in caught.value.detail and "not resent" in caught.value.detail
    assert KEYS[provider] not in caught.value.detail


@pytest.mark.parametrize(
    "answer", [status(429), status(500), status(502), status(503), timeout, refused_connection]
)
def test_resend_failures_are_retryable_and_every_attempt_carries_the_same_key(
    db: Database, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    fake = Fake(answer)
    with pytest.raises(ExternalServiceError) as caught:
        senders.send_resend(context(db, fake, "resend"), outgoing("resend"))
    assert caught.value.retryable
    keys = {r.headers["Idempotency-Key"] for r in fake.requests}
    assert keys == {"msg_01JDTESTMESSAGE000000000001"}
    assert RESEND_KEY not in caught.value.detail


def test_resend_recovers_in_process_after_a_timeout_with_the_same_key(db: Database) -> None:
    fake = Fake(provider_ok, queued=[timeout])
    assert senders.send_resend(context(db, fake, "resend"), outgoing("resend"))
    assert [r.headers["Idempotency-Key"] for r in fake.requests] == [
        "msg_01JDTESTMESSAGE000000000001"
    ] * 2


def test_resend_409_concurrent_request_is_retryable_other_409_is_not(db: Database) -> None:
    def conflict(name: str) -> Callable[[httpx.Request], httpx.Response]:
        body = {"statusCode": 409, "name": name, "message": "idempotency"}
        return lambda r: httpx.Response(409, json=body)

    for name, retryable in (
        ("concurrent_idempotent_requests", True),
        ("invalid_idempotent_request", False),
    ):
        with pytest.raises(ExternalServiceError) as caught:
            senders.send_resend(context(db, Fake(conflict(name)), "resend"), outgoing("resend"))
        assert caught.value.retryable is retryable


def test_resend_lookup_asks_for_the_idempotent_resend() -> None:
    assert SENDERS["resend"].lookup is senders.resend_lookup
    assert senders.resend_lookup(outgoing("resend")) is None


# --- end to end: queue, send job, webhooks through the inbox --------------------------------


def _ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def integration(client: TestClient, clinic: Clinic, provider: str) -> str:
    credentials = {
        "sendgrid": {"api_key": SENDGRID_KEY, "webhook_verification_key": SG_PUBLIC},
        "resend": {"api_key": RESEND_KEY, "webhook_secret": RESEND_WHSEC},
        "mailgun": {"api_key": MAILGUN_KEY, "webhook_secret": MAILGUN_SIGNING_KEY},
    }[provider]
    body = {
        "connector": provider,
        "name": provider,
        "credentials": credentials,
        "settings": SETTINGS[provider],
    }
    return str(
        _ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"]
    )


def patient(client: TestClient, clinic: Clinic, email: str, first: str = "Quinn") -> str:
    body = {
        "first_name": first,
        "last_name": "Sample",
        "date_of_birth": "1984-02-03",
        "email": email,
    }
    return str(
        _ok(client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers), 201)["id"]
    )


def queue(client: TestClient, clinic: Clinic, patient_id: str) -> dict[str, Any]:
    body = {"patient_id": patient_id, "channel": "email", "subject": "Forms", "body": "Hello."}
    result: dict[str, Any] = _ok(
        client.post(f"{API}/messages", json=body, headers=clinic.headers), 202
    )
    return result


def drain(db: Database, settings: Settings, kind: str) -> int:
    """Run the pending jobs of ``kind`` once, in this thread, and mark them done."""
    with db.read() as session:
        jobs = session.scalars(
            sa.select(Job)
            .where(Job.kind == kind, Job.state == "pending")
            .order_by(Job.created_at, Job.id)
        ).all()
    handler = registry.get(kind)
    assert handler is not None
    for job in jobs:
        handler.handler(
            JobContext(
                job.id,
                kind,
                job.tenant_id,
                dict(job.payload),
                1,
                8,
                db,
                SystemClock().now,
                settings,
            )
        )
        with db.write() as session:
            session.execute(sa.update(Job).where(Job.id == job.id).values(state="succeeded"))
    return len(jobs)


def message(db: Database, message_id: str) -> Message:
    with db.read() as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


def timeline(db: Database, message_id: str) -> list[str]:
    with db.read() as session:
        return list(
            session.scalars(
                sa.select(MessageEvent.status)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.at, MessageEvent.id)
            )
        )


def consents(db: Database, patient_id: str) -> list[tuple[bool, str]]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(CommunicationConsent)
            .where(
                CommunicationConsent.patient_id == patient_id,
                CommunicationConsent.channel == "email",
            )
            .order_by(CommunicationConsent.recorded_at, CommunicationConsent.id)
        ).all()
        return [(r.granted, r.source) for r in rows]


def sent(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, patient_id: str
) -> Message:
    queued = queue(client, clinic, patient_id)
    assert queued["status"] == "queued"
    assert drain(db, settings, SEND_KIND) == 1
    found = message(db, queued["id"])
    assert found.status == "sent" and found.provider_message_id
    return found


# SendGrid ---------------------------------------------------------------------------------


def sendgrid_post(client: TestClient, integration_id: str, items: list[dict[str, Any]]) -> Any:
    body = json.dumps(items).encode() + b"\r\n"
    timestamp = str(int(time.time()))
    signature = base64.b64encode(
        SG_PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    # The oracle: SendGrid's own library accepts what we sign.
    assert EventWebhook(SG_PUBLIC).verify_signature(body.decode(), signature, timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    return _ok(client.post(f"/webhooks/{integration_id}", content=body, headers=headers))


def sg_event(msg: Message, kind: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": msg.to_address,
        "timestamp": ts,
        "event": kind,
        "sg_event_id": token_source.token_urlsafe(16),
        "sg_message_id": f"{msg.provider_message_id}.filterdrecv-5bd5-1-6744F1A1-4.0",
        "cb_message_id": msg.id,
        **extra,
    }


def test_sendgrid_sends_through_the_job_and_events_apply_in_any_order_then_bounce_suppresses(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "sendgrid")
    quinn = patient(client, clinic, "quinn@example.com")
    first = sent(client, clinic, db, settings, quinn)
    assert json.loads(fake.requests[-1].content)["custom_args"] == {"cb_message_id": first.id}
    now = int(time.time())
    # One batch, out of order: open before delivered before processed; a deferral.
    # (The timeline is ordered by when things happened, not by arrival.)
    result = sendgrid_post(
        client,
        hook,
        [
            sg_event(first, "open", now + 4),
            sg_event(first, "delivered", now + 3),
            sg_event(first, "deferred", now + 2, response="421 try later"),
            sg_event(first, "processed", now + 1),
        ],
    )
    assert result == {"received": 4, "duplicates": 0}
    assert drain(db, settings, PROCESS_KIND) == 4
    assert message(db, first.id).status == "opened"
    assert timeline(db, first.id) == [
        "queued",
        "sending",
        "sent",
        "sent",
        "deferred",
        "delivered",
        "opened",
    ]

    second = sent(client, clinic, db, settings, quinn)
    sendgrid_post(
        client,
        hook,
        [sg_event(second, "bounce", now, type="bounce", reason="550 5.1.1 no such user")],
    )
    drain(db, settings, PROCESS_KIND)
    bounced = message(db, second.id)
    assert bounced.status == "bounced" and "no such user" in (bounced.error or "")
    assert consents(db, quinn) == [(False, "hard bounce")]
    third = queue(client, clinic, quinn)
    assert third["status"] == "suppressed"
    assert drain(db, settings, SEND_KIND) == 0
    # A late "delivered" never undoes the bounce.
    sendgrid_post(client, hook, [sg_event(second, "delivered", now - 60)])
    drain(db, settings, PROCESS_KIND)
    assert message(db, second.id).status == "bounced"


def test_a_clinic_template_naming_a_dynamic_template_goes_out_as_it(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    integration(client, clinic, "sendgrid")
    quinn = patient(client, clinic, "quinn@example.com")
    template = {"subject": "Reminder", "body": "Hi {{ patient.first_name }}",
                "provider_template_id": "d-" + "a" * 32}  # fmt: skip
    saved = client.put(f"{API}/message-templates/booking.reminder/email/en", json=template,
                       headers=clinic.headers)  # fmt: skip
    _ok(saved)
    variables = sample_variables("booking.reminder", "en")
    body = {"patient_id": quinn, "channel": "email", "template": "booking.reminder",
            "variables": variables}  # fmt: skip
    _ok(client.post(f"{API}/messages", json=body, headers=clinic.headers), 202)
    drain(db, settings, SEND_KIND)
    sent = json.loads(fake.requests[-1].content)
    assert sent["template_id"] == "d-" + "a" * 32
    data = sent["personalizations"][0]["dynamic_template_data"]
    assert data["patient"] == variables["patient"]  # what the message was queued with
    assert data["booking"]["confirmation_code"] == variables["booking"]["confirmation_code"]
    listing = {**template, "provider_template_variables": ["patient.first_name"]}
    refused = client.put(
        f"{API}/message-templates/booking.reminder/email/en", headers=clinic.headers, json=listing
    )
    assert _ok(refused, 422)["errors"][0]["field"] == "provider_template_variables"


def test_sendgrid_blocked_bounce_is_not_a_suppression(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "sendgrid")
    quinn = patient(client, clinic, "quinn@example.com")
    msg = sent(client, clinic, db, settings, quinn)
    sendgrid_post(client, hook, [sg_event(msg, "bounce", int(time.time()), type="blocked")])
    drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "undelivered"
    assert consents(db, quinn) == []


# Resend -----------------------------------------------------------------------------------


def resend_post(
    client: TestClient, integration_id: str, kind: str, msg: Message, **data: Any
) -> Any:
    body = json.dumps(
        {
            "type": kind,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": {
                "email_id": msg.provider_message_id,
                "from": "Maple Clinic <rdv@clinic.example>",
                "to": [msg.to_address],
                "subject": msg.subject,
                "created_at": "2026-11-24T10:00:00.000Z",
                **data,
            },
        }
    )
    msg_id = f"msg_{token_source.token_hex(8)}"
    now = datetime.now(UTC)
    signature = standardwebhooks.Webhook(RESEND_WHSEC).sign(msg_id, now, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
        "Content-Type": "application/json",
    }
    # The oracle: the Standard Webhooks package accepts what we send (Resend sends the
    # svix-* names of its headers; the package reads the webhook-* ones).
    standard = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    standardwebhooks.Webhook(RESEND_WHSEC).verify(body, standard)
    return _ok(client.post(f"/webhooks/{integration_id}", content=body.encode(), headers=headers))


def test_resend_sends_with_idempotency_key_and_events_apply_then_complaint_suppresses(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "resend")
    quinn = patient(client, clinic, "quinn@example.com")
    msg = sent(client, clinic, db, settings, quinn)
    assert fake.requests[-1].headers["Idempotency-Key"] == msg.id
    for kind in (
        "email.delivered",
        "email.delivery_delayed",
        "email.sent",
        "email.clicked",
        "email.opened",
    ):
        assert resend_post(client, hook, kind, msg)["received"] == 1
        drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "clicked"
    assert timeline(db, msg.id)[3:] == ["delivered", "deferred", "sent", "clicked", "opened"]

    resend_post(client, hook, "email.complained", msg)
    drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "complained"
    assert consents(db, quinn) == [(False, "complaint")]
    assert queue(client, clinic, quinn)["status"] == "suppressed"


def test_resend_transient_bounce_does_not_suppress_a_permanent_one_does(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "resend")
    quinn = patient(client, clinic, "quinn@example.com")
    msg = sent(client, clinic, db, settings, quinn)
    resend_post(
        client,
        hook,
        "email.bounced",
        msg,
        bounce={"type": "Transient", "subType": "MailboxFull", "message": "full"},
    )
    drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "bounced" and consents(db, quinn) == []
    resend_post(
        client,
        hook,
        "email.bounced",
        msg,
        bounce={"type": "Permanent", "subType": "General", "message": "gone"},
    )
    drain(db, settings, PROCESS_KIND)
    assert consents(db, quinn) == [(False, "hard bounce")]


# Mailgun ----------------------------------------------------------------------------------


def mailgun_post(client: TestClient, integration_id: str, event_data: dict[str, Any]) -> Any:
    timestamp, token = str(int(time.time())), token_source.token_hex(25)
    signature = hmac.new(
        MAILGUN_SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    body = {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event_data,
    }
    return _ok(client.post(f"/webhooks/{integration_id}", json=body))


def mg_event(msg: Message, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": token_source.token_urlsafe(16),
        "event": kind,
        "timestamp": time.time(),
        "recipient": msg.to_address,
        "message": {"headers": {"message-id": msg.provider_message_id}},
        "user-variables": {},
        **extra,
    }


def test_mailgun_events_match_by_provider_id_temporary_failure_is_timeline_only(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "mailgun")
    quinn = patient(client, clinic, "quinn@example.com")
    alex = patient(client, clinic, "QUINN@example.com", first="Alex")  # same shared address
    msg = sent(client, clinic, db, settings, quinn)
    assert "<" not in (msg.provider_message_id or "")
    mailgun_post(client, hook, mg_event(msg, "delivered"))
    drain(db, settings, PROCESS_KIND)
    mailgun_post(client, hook, mg_event(msg, "accepted"))  # late
    mailgun_post(
        client,
        hook,
        mg_event(
            msg,
            "failed",
            severity="temporary",
            reason="generic",
            **{"delivery-status": {"code": 452, "message": "later"}},
        ),
    )
    drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "delivered"
    assert timeline(db, msg.id)[3:] == ["delivered", "sent", "deferred"]
    assert consents(db, quinn) == []

    second = sent(client, clinic, db, settings, quinn)
    # Matched by our id (user-variables) even without the provider's id.
    event = mg_event(
        second,
        "failed",
        severity="permanent",
        reason="bounce",
        message={"headers": {}},
        **{
            "user-variables": {"cb_message_id": second.id},
            "delivery-status": {"code": 550, "message": "No such user"},
        },
    )
    mailgun_post(client, hook, event)
    drain(db, settings, PROCESS_KIND)
    assert message(db, second.id).status == "bounced"
    assert consents(db, quinn) == [(False, "hard bounce")]
    assert consents(db, alex) == [(False, "hard bounce")]
    assert queue(client, clinic, alex)["status"] == "suppressed"
    # A replay of the same event changes nothing more.
    mailgun_post(client, hook, event)
    drain(db, settings, PROCESS_KIND)
    assert consents(db, quinn) == [(False, "hard bounce")]


def test_mailgun_complaint_suppresses(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fake: Fake
) -> None:
    hook = integration(client, clinic, "mailgun")
    quinn = patient(client, clinic, "quinn@example.com")
    msg = sent(client, clinic, db, settings, quinn)
    for kind in ("opened", "clicked", "complained"):
        mailgun_post(client, hook, mg_event(msg, kind))
        drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "complained"
    assert consents(db, quinn) == [(False, "complaint")]


def test_events_for_another_clinics_message_change_nothing(
    client: TestClient,
    clinic: Clinic,
    make_clinic: Callable[..., Clinic],
    db: Database,
    settings: Settings,
    fake: Fake,
) -> None:
    integration(client, clinic, "sendgrid")
    quinn = patient(client, clinic, "quinn@example.com")
    msg = sent(client, clinic, db, settings, quinn)
    other = make_clinic("Birch Clinic")
    other_hook = integration(client, other, "sendgrid")
    sendgrid_post(client, other_hook, [sg_event(msg, "spamreport", int(time.time()))])
    drain(db, settings, PROCESS_KIND)
    assert message(db, msg.id).status == "sent"
    assert consents(db, quinn) == []
