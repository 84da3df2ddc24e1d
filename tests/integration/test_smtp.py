"""The ``smtp`` connector and ``messaging.email`` against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from fastapi.testclient import TestClient
from icalendar import Calendar, Event

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.integrations.connectors.smtp import SessionPool, Smtp, SmtpCredentials, SmtpError
from clinicbridge.messaging.email import Attachment, build_email, send_smtp
from tests.conftest import Clinic, free_port
from tests.tls_support import self_signed_server_context

USER = "frontdesk@clinic.example"
PASSWORD = "c0rrect-h0rse-battery"
WRONG = "wr0ng-passw0rd-guess"
SUBJECT = "Rendez-vous confirmé"


@dataclass
class Sink:
    """Keeps what the server accepted."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def only(self) -> EmailMessage:
        assert len(self.envelopes) == 1
        content = self.envelopes[0].original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    port: int
    sink: Sink

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "from_email": "rdv@clinic.example",
            "from_name": "Clinique Érable",
            "timeout_seconds": 5,
        } | overrides


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return self_signed_server_context(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start an aiosmtpd server on 127.0.0.1 with the given SMTP options."""
    started: list[Controller] = []

    def start(**options: Any) -> Server:
        sink = Sink()
        port = free_port()
        controller = Controller(
            sink, hostname="127.0.0.1", port=port, server_hostname="mail.test", **options
        )
        controller.start()
        started.append(controller)
        return Server(port, sink)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def plain(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def with_auth(start_server: Callable[..., Server]) -> Server:
    return start_server(authenticator=authenticator, auth_require_tls=False)


def _invite() -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//ClinicBridge tests//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", "bkg_123@clinic.example")
    event.add("summary", "Physiothérapie")
    event.add("dtstart", datetime(2026, 3, 9, 14, 0, tzinfo=UTC))
    event.add("dtend", datetime(2026, 3, 9, 15, 0, tzinfo=UTC))
    event.add("dtstamp", datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    cal.add_component(event)
    return bytes(cal.to_ical())


def _message(**overrides: Any) -> EmailMessage:
    args: dict[str, Any] = {
        "from_email": "rdv@clinic.example",
        "from_name": "Clinique Érable",
        "to": "quinn@example.com",
        "subject": SUBJECT,
        "text": "Bonjour Quinn, votre rendez-vous est confirmé.",
        "message_id": "dlv_01TEST",
    }
    return build_email(**(args | overrides))


def _creds(password: str = PASSWORD) -> dict[str, Secret]:
    return {"username": Secret(USER), "password": Secret(password)}


def _ctx(db: Database, settings: dict[str, Any], creds: dict[str, Secret] | None = None):  # type: ignore[no-untyped-def]
    return ConnectorContext(
        db=db,
        tenant_id="ten_x",
        integration_id="int_x",
        credentials=creds or {},
        settings=settings,
    )


# --- delivery ---------------------------------------------------------------------------


def test_plain_delivery_carries_content_headers_alternative_and_ics(plain: Server) -> None:
    message = _message(
        html="<p>Bonjour Quinn, votre rendez-vous est <b>confirmé</b>.</p>",
        attachments=[
            Attachment("rendez-vous.ics", _invite(), "text/calendar; charset=utf-8; method=PUBLISH")
        ],
        language="fr-CA",
        headers={"Auto-Submitted": "auto-generated"},
        to=["quinn@example.com", "Robin Doe <robin@example.com>"],
    )
    sent_id = send_smtp(plain.settings(), None, message)

    assert sent_id == "<dlv_01TEST@clinic.example>"
    envelope = plain.sink.envelopes[0]
    assert envelope.mail_from == "rdv@clinic.example"
    assert envelope.rcpt_tos == ["quinn@example.com", "robin@example.com"]
    got = plain.sink.only()
    assert got["Message-ID"] == sent_id
    assert str(got["Subject"]) == SUBJECT
    assert got["From"].addresses[0].display_name == "Clinique Érable"
    assert got["From"].addresses[0].addr_spec == "rdv@clinic.example"
    assert [a.addr_spec for a in got["To"].addresses] == ["quinn@example.com", "robin@example.com"]
    assert got["Content-Language"] == "fr-CA"
    assert got["Auto-Submitted"] == "auto-generated"
    assert got["Date"].datetime.tzinfo is not None
    assert got.get_content_type() == "multipart/mixed"

    alternative = next(
        p for p in got.iter_parts() if p.get_content_type() == "multipart/alternative"
    )
    kinds = [p.get_content_type() for p in alternative.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    assert got.get_body(("plain",)).get_content().strip().endswith("est confirmé.")  # type: ignore[union-attr]
    assert "<b>confirmé</b>" in got.get_body(("html",)).get_content()  # type: ignore[union-attr]

    (ics,) = list(got.iter_attachments())
    assert ics.get_content_type() == "text/calendar"
    assert ics.get_param("method") == "PUBLISH"
    assert ics.get_filename() == "rendez-vous.ics"
    calendar = Calendar.from_ical(ics.get_payload(decode=True))
    assert str(calendar["method"]) == "PUBLISH"
    (event,) = calendar.walk("VEVENT")
    assert str(event["uid"]) == "bkg_123@clinic.example"
    assert str(event["summary"]) == "Physiothérapie"
    assert event.decoded("dtstart") == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)


def test_text_only_message_is_a_single_part(plain: Server) -> None:
    send_smtp(plain.settings(), {}, _message())
    got = plain.sink.only()
    assert got.get_content_type() == "text/plain"
    assert "Content-Language" not in got


def test_the_message_id_is_ours_and_stable() -> None:
    first = _message(message_id="dlv_42")
    again = _message(message_id="<dlv_42@clinic.example>")
    assert first["Message-ID"] == again["Message-ID"] == "<dlv_42@clinic.example>"
    assert _message(message_id="dlv_42@hub.example")["Message-ID"] == "<dlv_42@hub.example>"
    with pytest.raises(ValueError, match="message_id"):
        _message(message_id="not an id")


def test_build_email_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="headers"):
        _message(headers={"Message-ID": "<other@x>"})
    with pytest.raises(ValueError, match="language"):
        _message(language="fr_CA!")
    with pytest.raises(ValueError, match="to"):
        _message(to=[])
    with pytest.raises(ValueError):  # header injection
        _message(subject="Hi\r\nBcc: everyone@example.com")


# --- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("excluded", ["LOGIN", "PLAIN"])
def test_auth_login_and_plain(start_server: Callable[..., Server], excluded: str) -> None:
    server = start_server(
        authenticator=authenticator, auth_require_tls=False, auth_exclude_mechanism=[excluded]
    )
    send_smtp(server.settings(), _creds(), _message())
    assert server.sink.envelopes[0].mail_from == "rdv@clinic.example"


def test_wrong_password_is_a_clear_error_without_the_password(with_auth: Server) -> None:
    with pytest.raises(SmtpError) as caught:
        send_smtp(with_auth.settings(), _creds(WRONG), _message())
    error = caught.value
    assert isinstance(error, ExternalServiceError)
    assert "refused the username or password" in error.detail
    assert error.status_code == 535 and error.retryable is False and error.needs_reauth
    assert f"127.0.0.1:{with_auth.port}" in error.detail
    assert WRONG not in str(error) and WRONG not in repr(error)
    assert error.__cause__ is None and with_auth.sink.envelopes == []


def test_a_server_echoing_the_password_does_not_leak_it(
    start_server: Callable[..., Server],
) -> None:
    def echo(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> Any:
        said = data.password.decode() if isinstance(data, LoginPassword) else "?"
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 wrong: {said}")

    server = start_server(authenticator=echo, auth_require_tls=False)
    with pytest.raises(SmtpError) as caught:
        send_smtp(server.settings(), _creds(WRONG), _message())
    assert "wrong: **********" in caught.value.detail and WRONG not in caught.value.detail


def test_plain_strings_work_as_credentials_too(with_auth: Server) -> None:
    send_smtp(with_auth.settings(), {"username": USER, "password": PASSWORD}, _message())
    assert len(with_auth.sink.envelopes) == 1


def test_credentials_schema_wants_both_or_neither() -> None:
    assert SmtpCredentials.model_validate({}).username is None
    with pytest.raises(ValueError, match="both username and password"):
        SmtpCredentials.model_validate({"username": USER})
    # Passwords keep their spaces; usernames are stripped.
    creds = SmtpCredentials.model_validate({"username": f" {USER} ", "password": " pass word "})
    assert (creds.username, creds.password) == (USER, " pass word ")


# --- TLS --------------------------------------------------------------------------------


def test_starttls_with_a_self_signed_certificate(
    start_server: Callable[..., Server], tls_context: ssl.SSLContext
) -> None:
    server = start_server(
        tls_context=tls_context, require_starttls=True, authenticator=authenticator
    )
    settings = server.settings(security="starttls", tls_verify=False)
    send_smtp(settings, _creds(), _message())
    assert len(server.sink.envelopes) == 1

    with pytest.raises(SmtpError) as caught:
        send_smtp(server.settings(security="starttls"), _creds(), _message())
    assert "certificate could not be verified" in caught.value.detail
    assert "tls_verify" in caught.value.detail and caught.value.retryable is False


def test_implicit_tls_with_a_self_signed_certificate(
    start_server: Callable[..., Server], tls_context: ssl.SSLContext
) -> None:
    # aiosmtpd does not count implicit TLS as TLS for auth_require_tls.
    server = start_server(
        ssl_context=tls_context, authenticator=authenticator, auth_require_tls=False
    )
    send_smtp(server.settings(security="ssl", tls_verify=False), _creds(), _message())
    assert len(server.sink.envelopes) == 1


def test_starttls_asked_of_a_server_without_it(plain: Server) -> None:
    with pytest.raises(SmtpError, match="does not offer STARTTLS"):
        send_smtp(plain.settings(security="starttls"), None, _message())


def test_connection_refused_is_clear_and_retryable() -> None:
    port = free_port()
    settings = Server(port, Sink()).settings()
    with pytest.raises(SmtpError) as caught:
        send_smtp(settings, None, _message())
    assert caught.value.retryable is True
    assert caught.value.detail == (
        f"SMTP 127.0.0.1:{port}: connection refused (is the server running and the port right?)"
    )


def test_recipient_refused_permanently_is_not_retryable(
    start_server: Callable[..., Server],
) -> None:
    class Picky(Sink):
        async def handle_RCPT(
            self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
        ) -> str:
            return "550 5.1.1 No such user"

    port = free_port()
    controller = Controller(Picky(), hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    try:
        with pytest.raises(SmtpError) as caught:
            send_smtp(Server(port, Sink()).settings(), None, _message())
    finally:
        controller.stop()
    assert caught.value.status_code == 550 and caught.value.retryable is False
    assert "refused all 1 recipient(s)" in caught.value.detail


# --- the connector's test ---------------------------------------------------------------


def test_connector_test_connection(
    db: Database,
    plain: Server,
    with_auth: Server,
    start_server: Callable[..., Server],
    tls_context: ssl.SSLContext,
) -> None:
    smtp = Smtp()
    starttls = start_server(tls_context=tls_context, require_starttls=True)
    implicit = start_server(
        ssl_context=tls_context, authenticator=authenticator, auth_require_tls=False
    )

    assert smtp.test_connection(_ctx(db, plain.settings())).message == "connected without TLS"
    logged_in = smtp.test_connection(_ctx(db, with_auth.settings(), _creds()))
    assert logged_in.ok and logged_in.message == "connected without TLS and logged in"
    refused = smtp.test_connection(_ctx(db, with_auth.settings(), _creds(WRONG)))
    assert not refused.ok and refused.needs_reauth and WRONG not in refused.message
    tls = smtp.test_connection(_ctx(db, starttls.settings(security="starttls", tls_verify=False)))
    assert tls.ok and tls.message == "connected with STARTTLS"
    ssl_ok = smtp.test_connection(
        _ctx(db, implicit.settings(security="ssl", tls_verify=False), _creds())
    )
    assert ssl_ok.ok and ssl_ok.message == "connected with implicit TLS and logged in"
    closed = smtp.test_connection(_ctx(db, Server(free_port(), Sink()).settings()))
    assert not closed.ok and not closed.needs_reauth and "connection refused" in closed.message
    # Nothing is sent by a connection test.
    for server in (plain, with_auth, starttls, implicit):
        assert server.sink.envelopes == []


# --- through the API --------------------------------------------------------------------


def _create(client: TestClient, clinic: Clinic, settings: dict[str, Any], **creds: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/integrations",
        headers=clinic.headers,
        json={
            "connector": "smtp",
            "name": "Clinic mail",
            "credentials": creds,
            "settings": settings,
        },
    )


def test_catalog_describes_smtp(client: TestClient, clinic: Clinic) -> None:
    data = client.get("/api/v1/connectors", headers=clinic.headers).json()["data"]
    smtp = next(c for c in data if c["key"] == "smtp")
    assert smtp["category"] == "email" and smtp["inbound_webhooks"] is False
    assert set(smtp["credentials_schema"]["properties"]) == {"username", "password"}
    assert smtp["credentials_schema"].get("required", []) == []
    settings = smtp["settings_schema"]
    assert set(settings["required"]) == {"host", "from_email"}
    assert settings["properties"]["security"]["enum"] == ["none", "starttls", "ssl"]


def test_api_validates_settings_and_tests_the_connection(
    client: TestClient, clinic: Clinic, with_auth: Server
) -> None:
    bad = _create(client, clinic, with_auth.settings(security="tls"))
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["settings.security"]
    bad_email = _create(client, clinic, with_auth.settings(from_email="not-an-address"))
    assert bad_email.json()["errors"][0]["field"] == "settings.from_email"
    half = _create(client, clinic, with_auth.settings(), username=USER)
    assert half.status_code == 422 and "both username and password" in half.text

    created = _create(client, clinic, with_auth.settings(), username=USER, password=PASSWORD)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["webhook_url"] is None and body["credentials_set"] is True
    assert PASSWORD not in created.text
    ok = client.post(f"/api/v1/integrations/{body['id']}/test", headers=clinic.headers)
    assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
    assert "logged in" in ok.json()["message"]

    closed = _create(client, clinic, with_auth.settings(port=free_port())).json()
    failed = client.post(f"/api/v1/integrations/{closed['id']}/test", headers=clinic.headers)
    assert failed.status_code == 200
    assert failed.json()["ok"] is False and failed.json()["status"] == "error"
    assert "connection refused" in failed.json()["message"]
    shown = client.get(f"/api/v1/integrations/{closed['id']}", headers=clinic.headers).json()
    assert "connection refused" in shown["last_test"]["error"]


def test_open_relay_needs_no_credentials(
    client: TestClient, clinic: Clinic, plain: Server, tmp_path: Path
) -> None:
    created = _create(client, clinic, plain.settings())
    assert created.status_code == 201, created.text
    assert created.json()["credentials_set"] is False
    tested = client.post(
        f"/api/v1/integrations/{created.json()['id']}/test", headers=clinic.headers
    )
    assert tested.json()["ok"] is True


# --- sessions kept between messages (the send job's pool) -----------------------------------


@dataclass
class Counting(Sink):
    """Also notes which SMTP session carried each message, and can hang up mid-DATA."""

    sessions: list[int] = field(default_factory=list)
    hang_up_in_data: bool = False
    refuse: bool = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return "554 5.7.1 Message refused"
        if self.hang_up_in_data:
            assert server.transport is not None
            server.transport.abort()  # the message arrived; the reply never leaves
            self.envelopes.append(envelope)
            return "250 never sent"
        self.sessions.append(id(session))
        return await super().handle_DATA(server, session, envelope)


def _pooled_server() -> tuple[Controller, Server, Counting]:
    sink, port = Counting(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    return controller, Server(port, sink), sink


def _mail(n: int) -> EmailMessage:
    return build_email(from_email="rdv@clinic.example", from_name=None, to="alex@example.com",
                       subject=f"Reminder {n}", text="See you", message_id=f"pool-{n}")  # fmt: skip


def test_a_kept_session_carries_many_messages_and_a_new_configuration_gets_its_own() -> None:
    controller, server, sink = _pooled_server()
    pool = SessionPool()
    try:
        for n in range(5):
            send_smtp(server.settings(), None, _mail(n), pool=pool, pool_key="int_a:1")
        send_smtp(server.settings(), None, _mail(5), pool=pool, pool_key="int_a:2")
        assert len(sink.envelopes) == 6
        assert len(set(sink.sessions[:5])) == 1  # one session for the first five
        assert sink.sessions[5] != sink.sessions[0]  # another configuration, another session
    finally:
        pool.close_all()
        controller.stop()


def test_a_session_the_server_dropped_is_replaced_without_losing_or_doubling_a_message() -> None:
    controller, server, sink = _pooled_server()
    pool = SessionPool()
    try:
        send_smtp(server.settings(), None, _mail(1), pool=pool, pool_key="k")
        controller.stop()  # the server restarts: the kept session is dead
        restarted = Controller(sink, hostname="127.0.0.1", port=server.port,
                               server_hostname="mail.test")  # fmt: skip
        restarted.start()
        controller = restarted
        send_smtp(server.settings(), None, _mail(2), pool=pool, pool_key="k")
        subjects = [e.original_content.split(b"Subject: ")[1].split(b"\r\n")[0]
                    for e in sink.envelopes if e.original_content]  # fmt: skip
        assert subjects == [b"Reminder 1", b"Reminder 2"]
    finally:
        pool.close_all()
        controller.stop()


def test_a_connection_lost_during_data_may_have_delivered_and_says_so() -> None:
    controller, server, sink = _pooled_server()
    pool = SessionPool()
    try:
        sink.hang_up_in_data = True
        with pytest.raises(SmtpError) as raised:
            send_smtp(server.settings(), None, _mail(1), pool=pool, pool_key="k")
        assert raised.value.maybe_delivered and raised.value.retryable
        assert len(sink.envelopes) == 1  # it did arrive: a resend would be a duplicate
        sink.hang_up_in_data = False
        sink.refuse = True
        with pytest.raises(SmtpError) as refused:  # a refusal is an answer: nothing arrived
            send_smtp(server.settings(), None, _mail(2), pool=pool, pool_key="k")
        assert not refused.value.maybe_delivered and refused.value.status_code == 554
    finally:
        pool.close_all()
        controller.stop()
