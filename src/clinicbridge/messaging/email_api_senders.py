"""E-mail through provider APIs: SendGrid, Resend and Mailgun.

Each sender makes one documented call through ``ConnectorContext.client()`` (timeouts,
retries, circuit breaker, call log) and returns the provider's message id, which the
event webhooks (``email_events``) use to find the message again. Our own message id
travels with every message too (SendGrid ``custom_args``, Mailgun ``v:`` variable,
Resend tag), so events can be matched by it as well.

When may a failed call be tried again (``ExternalServiceError.retryable``)?

* Resend takes an ``Idempotency-Key`` (our message id; honoured for 24 hours): a
  repeated request returns the first answer instead of sending twice, so every
  5xx, 429 and network failure is retryable, in-process and by the job.
* SendGrid and Mailgun take no idempotency key. Only failures where the provider
  cannot have accepted the message are retryable: 429 and 503, a refused or
  timed-out connection, an open breaker. A 500, 502 or 504, or a read/write timeout
  or dropped connection after the request went out, may hide an accepted message:
  such a failure is *not* retryable and its detail says the outcome is unknown (the
  send job then marks the message failed and never resends it; a later event
  webhook carrying our id still lands in its timeline).
* 4xx answers are never retryable (except Resend's 409 ``concurrent_idempotent_requests``).
  Their detail names the provider, the HTTP status and the provider's short reason,
  scrubbed of the API key, never the request.

The send function registered in ``providers`` only gets an ``Outgoing``; the database
(for the outbound call log) and, in tests, an httpx transport come from ``bind()``;
unbound, the database is opened once from the environment's settings (as
``twilio_sender`` does).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.integrations.connectors.mailgun import MailgunSettings
from clinicbridge.integrations.connectors.resend import ResendSettings
from clinicbridge.integrations.connectors.sendgrid import SendGridSettings
from clinicbridge.messaging import smtp_sender  # noqa: F401  (first: SMTP stays preferred)
from clinicbridge.messaging.providers import (
    OutcomeUnknownError,
    Outgoing,
    Sender,
    maybe_accepted,
    register,
)

CB_ID = "cb_message_id"  # the name our id travels under at every provider
_REASON_MAX = 200


# --- wiring ------------------------------------------------------------------------------


@dataclass
class _Wiring:
    db: Database | None = None
    transport: httpx.BaseTransport | None = None


_wiring = _Wiring()
_wiring_lock = threading.Lock()


def bind(db: Database | None, *, transport: httpx.BaseTransport | None = None) -> None:
    """For tests and tools that call the senders directly: a database and optionally an
    HTTP transport (a local fake). The send job passes its database on ``Outgoing``."""
    with _wiring_lock:
        _wiring.db, _wiring.transport = db, transport


def _database() -> Database:
    with _wiring_lock:
        if _wiring.db is None:
            raise RuntimeError("the e-mail API senders need the database: the send job gives it")
        return _wiring.db


def context_for(out: Outgoing) -> ConnectorContext:
    return ConnectorContext(
        db=out.db or _database(),
        tenant_id=out.tenant_id,
        integration_id=out.integration_id,
        credentials=_secrets(out.credentials),
        settings=dict(out.settings),
        transport=_wiring.transport,
    )


def _secrets(values: dict[str, Any]) -> dict[str, Secret]:
    return {k: v if isinstance(v, Secret) else Secret(str(v)) for k, v in values.items()}


# --- shared helpers ------------------------------------------------------------------------


def _api_key(ctx: ConnectorContext, provider: str) -> str:
    if "api_key" not in ctx.credentials:
        raise ExternalServiceError(
            f"{provider}: no api_key credential is set; nothing was sent",
            integration=ctx.integration_id,
            retryable=False,
        )
    return ctx.secret("api_key")


def _from(settings: SendGridSettings | ResendSettings | MailgunSettings, ctx: ConnectorContext,
          provider: str) -> tuple[str, str | None]:  # fmt: skip
    if not settings.from_email:
        raise ExternalServiceError(
            f"{provider}: the integration has no from_email setting; nothing was sent",
            integration=ctx.integration_id,
            retryable=False,
        )
    return str(settings.from_email), settings.from_name


def _attachment_bytes(attachment: dict[str, str]) -> bytes:
    if attachment.get("encoding") == "base64":  # binary files (a receipt's PDF)
        return base64.b64decode(attachment["content"])
    return attachment["content"].encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _content_type(attachment: dict[str, str]) -> str:
    return attachment.get("content_type") or "application/octet-stream"


def _mime_type(attachment: dict[str, str]) -> str:
    """The bare type (``text/calendar``) for APIs that take no parameters."""
    return _content_type(attachment).split(";", 1)[0].strip()


def _scrub(text: str, secret: str) -> str:
    if secret:
        text = text.replace(secret, "**********")
    return " ".join(text.split())[:_REASON_MAX]


def _reason(response: httpx.Response, secret: str) -> str:
    """The provider's short reason for a refusal, from its documented error shapes."""
    try:
        body: Any = response.json()
    except ValueError:
        return ""
    found: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):  # SendGrid {"errors": [{"message", "field"}]}
            for item in errors[:3]:
                if isinstance(item, dict) and isinstance(item.get("message"), str):
                    field = item.get("field")
                    prefix = f"{field}: " if isinstance(field, str) and field else ""
                    found.append(prefix + item["message"])
        for key in ("name", "message"):  # Resend {"name", "message"}; Mailgun {"message"}
            if isinstance(body.get(key), str):
                found.append(body[key])
    return _scrub("; ".join(found), secret)


def _refused(provider: str, ctx: ConnectorContext, response: httpx.Response, secret: str,
             *, retryable: bool = False) -> ExternalServiceError:  # fmt: skip
    status = response.status_code
    if status in (401, 403):
        what = "refused the API key"
    elif status == 404:
        what = "does not know this domain or endpoint"
    else:
        what = "refused the message"
    reason = _reason(response, secret)
    return ExternalServiceError(
        f"{provider} {what} (HTTP {status}{': ' + reason if reason else ''})",
        integration=ctx.integration_id,
        status_code=status,
        retryable=retryable,
    )


def _without_key(provider: str, exc: ExternalServiceError) -> ExternalServiceError:
    """SendGrid, Mailgun: a failure that may hide an accepted message is final."""
    if exc.retryable and maybe_accepted(exc):
        final = OutcomeUnknownError(
            f"{exc.detail}; outcome unknown: the provider may have accepted the message, "
            f"and {provider} takes no idempotency key, so it is not resent",
            integration=exc.integration,
            status_code=exc.status_code,
        )
        final.__cause__ = exc.__cause__
        return final
    return exc


# --- SendGrid -------------------------------------------------------------------------------


def sendgrid_payload(out: Outgoing, settings: SendGridSettings) -> dict[str, Any]:
    from_email, from_name = str(settings.from_email), settings.from_name
    sender: dict[str, str] = {"email": from_email}
    if from_name:
        sender["name"] = from_name
    content = [{"type": "text/plain", "value": out.body}]  # text/plain must come first
    if out.html:
        content.append({"type": "text/html", "value": out.html})
    payload: dict[str, Any] = {
        "personalizations": [{"to": [{"email": out.to_address}]}],
        "from": sender,
        "subject": out.subject or "",
        "content": content,
        "custom_args": {CB_ID: out.message_id},
    }
    if out.channel == "email" and out.provider_template:
        # The clinic's dynamic template renders subject and content from the variables.
        payload["template_id"] = str(out.provider_template["id"])
        payload["personalizations"][0]["dynamic_template_data"] = dict(
            out.provider_template.get("variables") or {}
        )
        del payload["subject"], payload["content"]
    if out.attachments:
        payload["attachments"] = [
            {
                "content": _b64(_attachment_bytes(a)),
                "type": _mime_type(a),
                "filename": a["filename"],
                "disposition": "attachment",
            }
            for a in out.attachments
        ]
    return payload


def send_sendgrid(ctx: ConnectorContext, out: Outgoing) -> str:
    """``POST /v3/mail/send``; the provider id is the ``X-Message-Id`` header."""
    settings = SendGridSettings.model_validate(ctx.settings)
    _from(settings, ctx, "SendGrid")
    key = _api_key(ctx, "SendGrid")
    try:
        with ctx.client(headers={"Authorization": f"Bearer {key}"}) as client:
            response = client.post(
                "/v3/mail/send", operation="mail.send", json=sendgrid_payload(out, settings)
            )
    except ExternalServiceError as exc:
        raise _without_key("SendGrid", exc) from exc.__cause__
    if response.status_code != 202 and not response.is_success:
        raise _refused("SendGrid", ctx, response, key)
    provider_id = str(response.headers.get("X-Message-Id", "")).strip()
    if not provider_id:
        raise ExternalServiceError(
            "SendGrid accepted the message but returned no X-Message-Id; not resent",
            integration=ctx.integration_id,
            status_code=response.status_code,
            retryable=False,
        )
    return provider_id


# --- Resend ---------------------------------------------------------------------------------


def resend_payload(out: Outgoing, settings: ResendSettings) -> dict[str, Any]:
    from_email, from_name = str(settings.from_email), settings.from_name
    payload: dict[str, Any] = {
        "from": f"{from_name} <{from_email}>" if from_name else from_email,
        "to": [out.to_address],
        "subject": out.subject or "",
        "text": out.body,
        "tags": [{"name": CB_ID, "value": out.message_id}],
    }
    if out.html:
        payload["html"] = out.html
    if out.language:
        payload["headers"] = {"Content-Language": out.language}
    if out.attachments:
        payload["attachments"] = [
            {
                "filename": a["filename"],
                "content": _b64(_attachment_bytes(a)),
                "content_type": _content_type(a),
            }
            for a in out.attachments
        ]
    return payload


def send_resend(ctx: ConnectorContext, out: Outgoing) -> str:
    """``POST /emails`` with ``Idempotency-Key`` = our id; the provider id is ``id``."""
    settings = ResendSettings.model_validate(ctx.settings)
    _from(settings, ctx, "Resend")
    key = _api_key(ctx, "Resend")
    with ctx.client(headers={"Authorization": f"Bearer {key}"}) as client:
        # The key makes every failure safe to retry: client errors stay retryable.
        response = client.post(
            "/emails",
            operation="emails.send",
            json=resend_payload(out, settings),
            idempotency_key=out.message_id,
        )
    if not response.is_success:
        concurrent = response.status_code == 409 and "concurrent" in _reason(response, key)
        raise _refused("Resend", ctx, response, key, retryable=concurrent)
    provider_id = _json_id(response)
    if not provider_id:
        raise ExternalServiceError(
            "Resend answered without an email id",
            integration=ctx.integration_id,
            status_code=response.status_code,
            retryable=True,  # idempotent: asking again returns the same answer
        )
    return provider_id


def resend_lookup(out: Outgoing) -> str | None:
    """No id of ours can be looked up at Resend; None asks for a resend, which the
    ``Idempotency-Key`` (our id) turns into the first answer for 24 hours. Only wire
    this for a send that started less than 24 hours ago."""
    return None


# --- Mailgun --------------------------------------------------------------------------------


def mailgun_form(out: Outgoing, settings: MailgunSettings) -> tuple[bytes, str]:
    """The multipart/form-data body and its Content-Type."""
    from_email, from_name = str(settings.from_email), settings.from_name
    fields: dict[str, str] = {
        "from": f'"{from_name}" <{from_email}>' if from_name else from_email,
        "to": out.to_address,
        "subject": out.subject or "",
        "text": out.body,
        "h:Message-Id": f"<{out.message_id}@{settings.domain}>",
        f"v:{CB_ID}": out.message_id,
    }
    if out.html:
        fields["html"] = out.html
    if out.language:
        fields["h:Content-Language"] = out.language
    files = [(a["filename"], _attachment_bytes(a), _content_type(a)) for a in out.attachments]
    return multipart(fields, files)


def _quoted(value: str) -> str:
    """A quoted-string parameter, escaped as browsers do (HTML5 / RFC 7578)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart(
    fields: dict[str, str], files: list[tuple[str, bytes, str]], *, boundary: str | None = None
) -> tuple[bytes, str]:
    """RFC 7578 multipart/form-data: the fields, then each file as ``attachment``."""
    mark = boundary or secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{mark}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode()
            + value.encode("utf-8")
            + b"\r\n"
        )
    for filename, data, content_type in files:
        chunks.append(
            f'--{mark}\r\nContent-Disposition: form-data; name="attachment"; '
            f'filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {_quoted(content_type)}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{mark}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={mark}"


def send_mailgun(ctx: ConnectorContext, out: Outgoing) -> str:
    """``POST /v3/{domain}/messages``; the provider id is ``id`` without ``<>``."""
    settings = MailgunSettings.model_validate(ctx.settings)
    _from(settings, ctx, "Mailgun")
    key = _api_key(ctx, "Mailgun")
    token = _b64(f"api:{key}".encode())
    body, content_type = mailgun_form(out, settings)
    try:
        with ctx.client(headers={"Authorization": f"Basic {token}"}) as client:
            response = client.post(
                f"/v3/{settings.domain}/messages",
                operation="messages.send",
                content=body,
                headers={"Content-Type": content_type},
            )
    except ExternalServiceError as exc:
        raise _without_key("Mailgun", exc) from exc.__cause__
    if not response.is_success:
        raise _refused("Mailgun", ctx, response, key)
    provider_id = _json_id(response).strip().strip("<>")
    if not provider_id:
        raise ExternalServiceError(
            "Mailgun accepted the message but returned no id; not resent",
            integration=ctx.integration_id,
            status_code=response.status_code,
            retryable=False,
        )
    return provider_id


def _json_id(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return ""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


# --- registration ---------------------------------------------------------------------------

CallFn = Callable[[ConnectorContext, Outgoing], str]


def _via_context(call: CallFn) -> Callable[[Outgoing, datetime], str]:
    def send(out: Outgoing, now: datetime) -> str:
        return call(context_for(out), out)

    send.__name__ = call.__name__
    return send


register(Sender("sendgrid", ("email",), _via_context(send_sendgrid)))
register(Sender("resend", ("email",), _via_context(send_resend), lookup=resend_lookup))
register(Sender("mailgun", ("email",), _via_context(send_mailgun)))
