"""SMS and WhatsApp through Twilio's Messages API.

``POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded
``To``, ``From`` or ``MessagingServiceSid``, ``Body``, optional ``StatusCallback``;
HTTP Basic ``account_sid:auth_token``) through ``ConnectorContext.client()``:
timeouts, retries, breaker and call log like every outbound call. WhatsApp uses the
same endpoint with ``whatsapp:``-prefixed addresses.

What an error means for the send job:

* 429, 5xx and network failures: ``retryable`` (the job puts the message back in
  the queue). When the request may have reached Twilio (a read timeout, 502/504),
  Twilio is asked first (``find``) so an accepted message is not sent twice.
* 4xx: not retryable, with a message of our own naming Twilio's error code (21211
  invalid number, 21610 the recipient replied STOP, ...). Twilio's own text quotes
  the phone number, so it is never copied.

Status callbacks: ``StatusCallback`` is the integration's webhook URL
(``{public_base_url}/webhooks/{integration_id}``, as ``integrations.service.to_out``
builds it) when the public base URL is configured (``CLINICBRIDGE_BASE_URL`` or
``configure(public_base_url=...)``); otherwise it is left out and Twilio uses the
Messaging Service's status callback, if one is set there.

Lookup (after a worker died mid-send): Twilio has no field for our own reference,
so the recipient's recent outbound messages are listed (``To``, newest first, one
page of 50) and the newest one created since the attempt started whose ``Body`` is
exactly ours is taken as ours. Limits: two identical bodies to one number within
that window cannot be told apart; a body Twilio rewrote (a Messaging Service's
"smart encoding") is not recognised and the message is sent again. ``DateSent`` is
not used as a filter: it stays empty while Twilio still queues the message, which
is exactly when a lookup right after a timeout happens.

The send job passes no database or settings to a sender (see ``providers.Sender``),
so this module keeps its own: ``configure(db=..., transport=..., public_base_url=...)``
(tests, or a process that already has them), else a database and base URL read once
from the environment, as ``webhooks.delivery`` does.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import sqlalchemy as sa

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.http.retry import Failure, classify_exception
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.providers import OutcomeUnknownError, Outgoing, Sender, register

CONNECTOR = "twilio"
WHATSAPP_PREFIX = "whatsapp:"
# How far back a lookup searches when it cannot learn when the attempt started.
LOOKUP_WINDOW = timedelta(days=2)
# Twilio's clock and ours may disagree a little about when the attempt started.
CLOCK_SLACK = timedelta(minutes=2)
LIST_PAGE_SIZE = 50
# Statuses where the request may have reached Twilio although no answer came back.
_MAYBE_ACCEPTED_STATUSES = (502, 504)

# Twilio error codes worth a sentence of our own (https://www.twilio.com/docs/api/errors).
ERRORS = {
    21211: "the 'To' number is not a valid phone number",
    21408: "sending to this region is not enabled on the Twilio account",
    21606: "the 'From' number cannot send SMS",
    21610: "the recipient has unsubscribed (replied STOP) from this sender",
    21612: "Twilio cannot route a message from this sender to this number",
    21614: "the 'To' number is not a mobile number",
    21617: "the message body is too long",
    63016: "outside the WhatsApp 24-hour window: an approved template is needed",
}


@dataclass
class _Runtime:
    db: Database | None = None
    transport: httpx.BaseTransport | None = None
    public_base_url: str | None = None  # "" means: no StatusCallback


_runtime = _Runtime()
_lock = threading.Lock()


def configure(
    *,
    db: Database | None = None,
    transport: httpx.BaseTransport | None = None,
    public_base_url: str | None = None,
) -> None:
    """For tests and tools that call the sender directly: a database, an HTTP transport
    (a local fake) and the public base URL. The send job passes its own on ``Outgoing``."""
    with _lock:
        _runtime.db, _runtime.transport = db, transport
        _runtime.public_base_url = None if public_base_url is None else public_base_url.rstrip("/")


def _resolved(out: Outgoing) -> _Runtime:
    """The send job's database and public base URL (on ``out``), else what ``configure``
    gave (tests). No base URL: no StatusCallback (127.0.0.1 is unreachable for Twilio)."""
    with _lock:
        db = out.db or _runtime.db
        base = out.public_base_url or _runtime.public_base_url or ""
        transport = _runtime.transport
    if db is None:
        raise RuntimeError("the Twilio sender needs the database: the send job gives it")
    return _Runtime(db, transport, base.rstrip("/"))


def _context(out: Outgoing, runtime: _Runtime) -> ConnectorContext:
    assert runtime.db is not None
    credentials = {
        name: value if isinstance(value, Secret) else Secret(str(value))
        for name, value in out.credentials.items()
    }
    return ConnectorContext(
        db=runtime.db,
        tenant_id=out.tenant_id,
        integration_id=out.integration_id,
        credentials=credentials,
        settings=out.settings,
        transport=runtime.transport,
    )


def _address(out: Outgoing, number: str) -> str:
    return f"{WHATSAPP_PREFIX}{number}" if out.channel == "whatsapp" else number


def _messages_path(ctx: ConnectorContext) -> str:
    return f"/2010-04-01/Accounts/{ctx.secret('account_sid')}/Messages.json"


def _basic(ctx: ConnectorContext) -> str:
    pair = f"{ctx.secret('account_sid')}:{ctx.secret('auth_token')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def status_callback_url(base_url: str, integration_id: str) -> str:
    """The integration's webhook URL, as ``integrations.service.to_out`` shows it."""
    return f"{base_url.rstrip('/')}/webhooks/{integration_id}"


def form(out: Outgoing, status_callback: str | None) -> dict[str, str]:
    """The form fields of the create-message request: ``Body``, or an approved template's
    ``ContentSid`` and ``ContentVariables`` (a JSON object of its numbered placeholders)."""
    fields = {"To": _address(out, out.to_address)}
    if out.provider_template:
        fields["ContentSid"] = str(out.provider_template["id"])
        fields["ContentVariables"] = json.dumps(
            out.provider_template.get("variables") or {}, ensure_ascii=False
        )
    else:
        fields["Body"] = out.body
    from_number = out.settings.get("from_number")
    if from_number:
        fields["From"] = _address(out, str(from_number))
    else:
        fields["MessagingServiceSid"] = str(out.settings["messaging_service_sid"])
    if status_callback:
        fields["StatusCallback"] = status_callback
    return fields


def send_message(out: Outgoing, now: datetime) -> str:
    """Send one SMS or WhatsApp message; the Message SID (``SM...``/``MM...``)."""
    if out.channel not in ("sms", "whatsapp"):
        raise ExternalServiceError(
            f"twilio cannot send {out.channel!r} messages", integration=CONNECTOR, retryable=False
        )
    runtime = _resolved(out)
    ctx = _context(out, runtime)
    callback = (
        status_callback_url(runtime.public_base_url, out.integration_id)
        if runtime.public_base_url
        else None
    )
    try:
        with ctx.client() as client:
            response = client.post(
                _messages_path(ctx),
                operation="messages.create",
                data=form(out, callback),
                headers={"Authorization": _basic(ctx)},
            )
    except ExternalServiceError as exc:
        if exc.retryable and _maybe_accepted(exc):
            found = _find_quietly(out, now, runtime)
            if found is not None:
                return found
            # not listed (yet): the next attempt asks again before any resend
            raise OutcomeUnknownError(
                exc.detail, integration=CONNECTOR, status_code=exc.status_code
            ) from exc
        raise
    if response.status_code in (200, 201):
        sid = _json(response).get("sid")
        if isinstance(sid, str) and sid:
            return sid
        raise ExternalServiceError(
            "twilio messages.create: answer without a message sid",
            integration=CONNECTOR,
            status_code=response.status_code,
            retryable=False,
        )
    raise _refused(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _refused(response: httpx.Response) -> ExternalServiceError:
    """A 4xx answer: not retryable (nothing was sent, sending again gives the same)."""
    status = response.status_code
    code = _json(response).get("code")
    code = code if isinstance(code, int) else None
    if status in (401, 403) and code not in ERRORS:
        what = "refused the credentials (check the account SID and auth token)"
    elif code in ERRORS:
        what = ERRORS[code]
    else:
        what = "refused the message"
    suffix = f" (Twilio error {code}, HTTP {status})" if code else f" (HTTP {status})"
    return ExternalServiceError(
        f"twilio messages.create: {what}{suffix}",
        integration=CONNECTOR,
        status_code=status,
        retryable=False,
    )


def _maybe_accepted(exc: ExternalServiceError) -> bool:
    if exc.status_code in _MAYBE_ACCEPTED_STATUSES:
        return True
    cause = exc.__cause__
    return (
        isinstance(cause, httpx.HTTPError) and classify_exception(cause) is Failure.MAYBE_PROCESSED
    )


def _find_quietly(out: Outgoing, since: datetime, runtime: _Runtime) -> str | None:
    try:
        return find(out, since, runtime)
    except ExternalServiceError:
        return None  # Twilio is not answering: the job's retry asks again (it finds `sending`)


def find(out: Outgoing, since: datetime, runtime: _Runtime | None = None) -> str | None:
    """The SID of an outbound message to ``out``'s recipient with exactly ``out``'s body,
    created at or after ``since`` (newest first), or None."""
    runtime = runtime or _resolved(out)
    ctx = _context(out, runtime)
    with ctx.client() as client:
        response = client.get(
            _messages_path(ctx),
            operation="messages.list",
            params={"To": _address(out, out.to_address), "PageSize": LIST_PAGE_SIZE},
            headers={"Authorization": _basic(ctx)},
        )
    if response.status_code != 200:  # 5xx and 429 were raised by the client already
        raise ExternalServiceError(
            f"twilio messages.list: answered HTTP {response.status_code}",
            integration=CONNECTOR,
            status_code=response.status_code,
            retryable=False,
        )
    messages = _json(response).get("messages")
    earliest = since - CLOCK_SLACK
    candidates: list[str] = []
    for item in messages if isinstance(messages, list) else []:
        if not isinstance(item, dict) or item.get("body") != out.body:
            continue
        if not str(item.get("direction", "outbound")).startswith("outbound"):
            continue
        created = _rfc2822(item.get("date_created"))
        sid = item.get("sid")
        if created is not None and created >= earliest and isinstance(sid, str) and sid:
            candidates.append(sid)
    taken = _taken(runtime, out.message_id, candidates)
    return next((sid for sid in candidates if sid not in taken), None)


def _taken(runtime: _Runtime, message_id: str, sids: list[str]) -> set[str]:
    """SIDs already recorded for another of our messages (an identical body sent before)."""
    if not sids:
        return set()
    assert runtime.db is not None
    with runtime.db.read() as session:
        return set(
            session.scalars(
                sa.select(Message.provider_message_id).where(
                    Message.provider == CONNECTOR,
                    Message.provider_message_id.in_(sids),
                    Message.id != message_id,
                )
            )
        )


def lookup(out: Outgoing) -> str | None:
    """``Sender.lookup``: was the message of an attempt cut short accepted by Twilio?
    A content template's text is Twilio's, not ours, so it cannot be matched: such a
    message is never resent (the send job marks it unknown)."""
    if out.provider_template:
        raise ExternalServiceError(
            "twilio: a content template message cannot be matched at Twilio",
            integration=CONNECTOR,
            retryable=False,
        )
    runtime = _resolved(out)
    return find(out, _attempt_started(out, runtime) or datetime.now(UTC) - LOOKUP_WINDOW, runtime)


def _attempt_started(out: Outgoing, runtime: _Runtime) -> datetime | None:
    assert runtime.db is not None
    with runtime.db.read() as session:
        message = session.get(Message, out.message_id)
        return message.send_started_at if message is not None else None


def _rfc2822(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def price_minor(price: object, unit: object) -> tuple[int | None, str | None]:
    """Twilio's ``Price`` ("-0.00790", negative = charged) in minor units of ``PriceUnit``,
    rounded to the nearest unit (sub-cent precision is lost)."""
    if not isinstance(price, str) or not price or not isinstance(unit, str) or len(unit) != 3:
        return None, None
    try:
        amount = abs(Decimal(price))
    except InvalidOperation:
        return None, None
    digits = 0 if unit.upper() in _ZERO_DECIMAL else 2
    return int((amount * 10**digits).to_integral_value()), unit.upper()


_ZERO_DECIMAL = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "XAF", "XOF"})

register(Sender(CONNECTOR, ("sms", "whatsapp"), send_message, lookup))
