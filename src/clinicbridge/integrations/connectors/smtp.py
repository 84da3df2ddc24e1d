"""SMTP: the clinic's own mail server, a hosted mailbox or a relay. No inbound webhooks.

Everything that talks SMTP lives here, so that ``smtplib``'s and ``ssl``'s errors are
translated into ours in one place (``SmtpError``, an ``ExternalServiceError``):
the connection test opens a session and quits; ``messaging.email.send_smtp`` sends
through one, kept open between messages by a ``SessionPool`` for the send job. A
session is: connect (implicit TLS for ``ssl``), EHLO, STARTTLS and EHLO again for
``starttls``, AUTH when credentials are set.

Error messages name the host, the port and the step that failed, quote at most a
short piece of the server's answer, and never contain the username's password
(the server's answer is scrubbed of it, plain and base64, in case it echoes it).
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, EmailStr, Field, StringConstraints, model_validator

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Credentials,
    Settings,
    TestResult,
)

Security = Literal["none", "starttls", "ssl"]
DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "ssl": 465}
_SERVER_TEXT_MAX = 200


class SmtpCredentials(Credentials):
    """Both optional (an open relay on a private network has none), but never one alone."""

    # Passwords may begin or end with spaces: only the username is stripped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    username: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
        | None
    ) = None
    password: Annotated[str, Field(min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> SmtpCredentials:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self


class SmtpSettings(Settings):
    host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-:\[\]_]+$")]
    port: Annotated[
        int | None,
        Field(ge=1, le=65535, description="Defaults to 25, 587 or 465 by security."),
    ] = None
    security: Security = "starttls"
    from_email: EmailStr
    from_name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n]*$")] | None = (
        None
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0
    # False only for test servers with self-signed certificates.
    tls_verify: bool = True

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]


class SmtpError(ExternalServiceError):
    """An SMTP session failed; ``status_code`` is the SMTP reply code when there was one."""

    def __init__(
        self,
        detail: str,
        *,
        integration: str,
        status_code: int | None = None,
        retryable: bool = True,
        needs_reauth: bool = False,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(
            detail, integration=integration, status_code=status_code, retryable=retryable
        )
        self.needs_reauth = needs_reauth
        self.maybe_delivered = maybe_delivered


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # asked for: test servers only
    return context


def _reveal(value: Secret | str | None) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


def _connect(
    cfg: SmtpSettings, username: str | None, password: str | None, step: list[str]
) -> smtplib.SMTP:
    """Connect, greet, secure, log in; ``step[0]`` names where it got to."""
    step[0] = "connect"
    conn: smtplib.SMTP
    if cfg.security == "ssl":
        conn = smtplib.SMTP_SSL(
            cfg.host, cfg.effective_port, timeout=cfg.timeout_seconds, context=tls_context(cfg)
        )
    else:
        conn = smtplib.SMTP(cfg.host, cfg.effective_port, timeout=cfg.timeout_seconds)
    try:
        step[0] = "EHLO"
        conn.ehlo_or_helo_if_needed()
        if cfg.security == "starttls":
            step[0] = "STARTTLS"
            conn.starttls(context=tls_context(cfg))
            conn.ehlo()
        if username is not None and password is not None:
            step[0] = "AUTH"
            conn.login(username, password)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def smtp_session(
    settings: SmtpSettings | Mapping[str, Any],
    credentials: Mapping[str, Secret | str] | None = None,
    *,
    integration: str = "smtp",
) -> Iterator[smtplib.SMTP]:
    """An open, greeted, secured and authenticated session; QUIT on the way out.

    Any failure, including one of the caller's commands inside the block, is raised
    as ``SmtpError``.
    """
    cfg = _settings(settings)
    username, password = _login_of(credentials)
    step = ["connect"]
    conn: smtplib.SMTP | None = None
    try:
        conn = _connect(cfg, username, password, step)
        step[0] = "send"
        yield conn
        step[0] = "QUIT"
        with suppress(smtplib.SMTPException, OSError):
            conn.quit()  # the work is done; a rude goodbye changes nothing
    except (smtplib.SMTPException, OSError) as exc:
        raise _translate(
            exc, step[0], cfg, _secret_forms(username, password), integration
        ) from None
    finally:
        if conn is not None:
            conn.close()


def _settings(settings: SmtpSettings | Mapping[str, Any]) -> SmtpSettings:
    return settings if isinstance(settings, SmtpSettings) else SmtpSettings.model_validate(settings)


def _login_of(credentials: Mapping[str, Secret | str] | None) -> tuple[str | None, str | None]:
    creds = credentials or {}
    return _reveal(creds.get("username")), _reveal(creds.get("password"))


def _send(conn: smtplib.SMTP, message: EmailMessage, step: list[str]) -> None:
    """``send_message``, noting in ``step`` when the DATA command starts: a connection
    lost from then on may have delivered the message."""
    original = conn.data

    def data(msg: Any) -> tuple[int, bytes]:
        step[0] = "DATA"
        return original(msg)

    conn.data = data  # type: ignore[method-assign]
    try:
        conn.send_message(message)
    finally:
        del conn.data  # back to the class's method


@dataclass
class _Kept:
    conn: smtplib.SMTP
    used_at: float
    sent: int = 0


class SessionPool:
    """Open sessions kept between messages, one per integration configuration and per
    thread (``smtplib`` connections are not thread-safe), so a burst of messages does
    not pay connect, EHLO, STARTTLS and AUTH for each one.

    A kept session is closed after ``idle_seconds`` unused or ``max_messages`` sent. One
    found closed by the server before a message started (MAIL FROM failed on a dropped
    connection: nothing was sent) is replaced once, transparently. Any other failure
    closes the session and is raised as ``SmtpError``; ``maybe_delivered`` is set when
    the connection broke during DATA without the server's reply. Sessions are kept by
    thread id, not in thread-locals, so ``close_all`` reaches those of ended threads too.
    """

    def __init__(self, *, idle_seconds: float = 30.0, max_messages: int = 100) -> None:
        self.idle_seconds = idle_seconds
        self.max_messages = max_messages
        self._sessions: dict[tuple[int, str], _Kept] = {}
        self._lock = threading.Lock()

    def _take(self, key: str) -> _Kept | None:
        with self._lock:
            found = self._sessions.pop((threading.get_ident(), key), None)
        if found is None:
            return None
        if time.monotonic() - found.used_at > self.idle_seconds or found.sent >= self.max_messages:
            _close(found.conn, polite=True)
            return None
        return found

    def _keep(self, key: str, kept: _Kept) -> None:
        with self._lock:
            self._sessions[(threading.get_ident(), key)] = kept

    def send(
        self,
        settings: SmtpSettings | Mapping[str, Any],
        credentials: Mapping[str, Secret | str] | None,
        message: EmailMessage,
        *,
        integration: str,
        key: str,
    ) -> None:
        cfg = _settings(settings)
        username, password = _login_of(credentials)
        kept = self._take(key)
        while True:
            step = ["send" if kept else "connect"]
            conn = kept.conn if kept else None
            try:
                if conn is None:
                    conn = _connect(cfg, username, password, step)
                    step[0] = "send"
                _send(conn, message, step)
            except (smtplib.SMTPException, OSError) as exc:
                if conn is not None:
                    _close(conn, polite=False)
                stale = kept is not None and step[0] == "send" and not isinstance(
                    exc, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused
                )  # fmt: skip
                if stale:
                    kept = None  # the server had closed it: open a fresh one, once
                    continue
                hidden = _secret_forms(username, password)
                raise _translate(exc, step[0], cfg, hidden, integration) from None
            self._keep(key, _Kept(conn, time.monotonic(), (kept.sent if kept else 0) + 1))
            return

    def close_all(self) -> None:
        """QUIT every kept session (shutdown, tests): call when no send is under way."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for kept in sessions:
            _close(kept.conn, polite=True)


def _close(conn: smtplib.SMTP, *, polite: bool) -> None:
    if polite:
        with suppress(smtplib.SMTPException, OSError):
            conn.quit()
    with suppress(OSError):
        conn.close()


def _secret_forms(username: str | None, password: str | None) -> tuple[str, ...]:
    """The password as a server could echo it: plain, base64 (LOGIN), the PLAIN blob."""
    if not password:
        return ()
    plain_blob = f"\0{username or ''}\0{password}".encode()
    return (
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain_blob).decode(),
    )


def _scrub(text: str, hidden: tuple[str, ...]) -> str:
    for form in hidden:
        text = text.replace(form, "**********")
    text = " ".join(text.split())
    return text[:_SERVER_TEXT_MAX]


def _server_said(exc: smtplib.SMTPResponseException, hidden: tuple[str, ...]) -> str:
    raw = exc.smtp_error
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"{exc.smtp_code} {_scrub(text, hidden)}".strip()


def _translate(
    exc: BaseException,
    step: str,
    cfg: SmtpSettings,
    hidden: tuple[str, ...],
    integration: str,
) -> SmtpError:
    """One place where smtplib, ssl and socket errors become ``SmtpError``."""
    where = f"{cfg.host}:{cfg.effective_port}"

    def error(detail: str, *, code: int | None = None, retryable: bool = True) -> SmtpError:
        return SmtpError(
            f"SMTP {where}: {detail}",
            integration=integration,
            status_code=code,
            retryable=retryable,
            # Lost during DATA with no reply: the server may have taken the message.
            maybe_delivered=step == "DATA" and not isinstance(exc, smtplib.SMTPResponseException),
        )

    if isinstance(exc, smtplib.SMTPAuthenticationError):
        failed = SmtpError(
            f"SMTP {where}: the server refused the username or password "
            f"({_server_said(exc, hidden)})",
            integration=integration,
            status_code=exc.smtp_code,
            retryable=False,
            needs_reauth=True,
        )
        return failed
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        if step == "STARTTLS":
            return error("the server does not offer STARTTLS (check security)", retryable=False)
        if step == "AUTH":
            return error(
                "the server does not offer AUTH on this connection "
                "(it may need STARTTLS first, or no credentials at all)",
                retryable=False,
            )
        return error(f"the server cannot take this message ({exc})", retryable=False)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = bool(codes) and all(400 <= code < 500 for code in codes)
        first = min(codes) if codes else None
        return error(
            f"the server refused all {len(codes)} recipient(s) ({first})",
            code=first,
            retryable=transient,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        # Greeting, MAIL FROM, DATA, STARTTLS ... refused with a reply code.
        transient = 400 <= exc.smtp_code < 500
        return error(
            f"{step} refused by the server ({_server_said(exc, hidden)})",
            code=exc.smtp_code,
            retryable=transient,
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        hint = " (is this an implicit-TLS port? check security)" if step == "connect" else ""
        return error(f"the server closed the connection during {step}{hint}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return error(
            f"the server's TLS certificate could not be verified ({exc.verify_message}); "
            "set tls_verify to false only for a test server",
            retryable=False,
        )
    if isinstance(exc, ssl.SSLError):
        return error(
            f"TLS failed during {step} ({exc.reason or 'handshake error'}); "
            "check security and port",
            retryable=False,
        )
    if isinstance(exc, ConnectionRefusedError):
        return error("connection refused (is the server running and the port right?)")
    if isinstance(exc, socket.gaierror):
        return error(f"cannot resolve host {cfg.host!r}")
    if isinstance(exc, TimeoutError):
        return error(f"no answer within {cfg.timeout_seconds:g} s during {step}")
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return error(f"network error during {step} ({reason})")
    return error(f"{step} failed ({type(exc).__name__})")


class Smtp(Connector):
    key = "smtp"
    display_name = "SMTP server"
    category = "email"
    credentials_schema = SmtpCredentials
    settings_schema = SmtpSettings

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        """Connect, EHLO, secure, log in, QUIT: no message is sent."""
        settings = SmtpSettings.model_validate(ctx.settings)
        try:
            with smtp_session(settings, ctx.credentials, integration=ctx.integration_id):
                pass
        except SmtpError as exc:
            return TestResult(False, exc.detail, needs_reauth=exc.needs_reauth)
        how = {"none": "without TLS", "starttls": "with STARTTLS", "ssl": "with implicit TLS"}
        auth = " and logged in" if ctx.credentials.get("username") else ""
        return TestResult(True, f"connected {how[settings.security]}{auth}")
