"""E-mail messages: build one (text + HTML, attachments, our Message-ID) and send it by SMTP.

``build_email`` makes a standard ``EmailMessage``::

    multipart/mixed                      (only when there are attachments)
    ├── multipart/alternative            (only when there is HTML)
    │   ├── text/plain; charset=utf-8
    │   └── text/html; charset=utf-8
    └── text/calendar; method=PUBLISH    (e.g. invite.ics), ...

The ``Message-ID`` is ours, chosen by the caller from something stable (the
delivery's id), so that a retry after an unknown outcome can be reconciled with
what the server or the recipient saw: the same message always carries the same id.

``send_smtp`` is synchronous on purpose: jobs run it in worker threads. The SMTP
session itself (TLS, AUTH, error translation) is the ``smtp`` connector's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Any

from clinicbridge.core.secrets import Secret
from clinicbridge.integrations.connectors.smtp import SessionPool, SmtpSettings, smtp_session

# Headers that build_email sets itself; ``headers=`` may not replace them.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "content-language",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "mime-version",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")  # BCP 47, loosely
_ID_LEFT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+$")  # dot-atom text


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard registry builds a new header class for every header it parses (a
    ``type()`` call: tens of microseconds each, ten headers a message); this one builds
    one class per header name and reuses it. Same classes, same parsing, same output."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


# email.policy.default, with the registry above.
POLICY = default_policy.clone(header_factory=_CachedHeaderRegistry())


@dataclass(frozen=True)
class Attachment:
    """A file to attach. ``content_type`` may carry parameters:
    ``text/calendar; method=PUBLISH``."""

    filename: str
    content: bytes | str
    content_type: str = "application/octet-stream"


def normalize_message_id(message_id: str, from_email: str) -> str:
    """``<left@right>``: brackets added, and the sender's domain when there is no ``@``."""
    value = message_id.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    left, at, right = value.partition("@")
    if not at:
        right = from_email.rpartition("@")[2]
    if not _ID_LEFT.match(left) or not right or not _ID_LEFT.match(right.strip("[]")):
        raise ValueError(f"message_id is not a valid Message-ID: {message_id!r}")
    return f"<{left}@{right}>"


def _split_content_type(content_type: str) -> tuple[str, str, dict[str, str]]:
    probe = EmailMessage()
    probe["Content-Type"] = content_type
    maintype, subtype = probe.get_content_maintype(), probe.get_content_subtype()
    if probe.get_content_type() != f"{maintype}/{subtype}" or "/" not in content_type:
        raise ValueError(f"not a MIME type: {content_type!r}")
    params = {key.lower(): str(value) for key, value in (probe.get_params() or [])[1:]}
    return maintype, subtype, params


def _add_attachment(message: EmailMessage, attachment: Attachment) -> None:
    maintype, subtype, params = _split_content_type(attachment.content_type)
    content = attachment.content
    if isinstance(content, str):
        if maintype != "text":
            content = content.encode()
        else:
            params.pop("charset", None)  # a str is always encoded as UTF-8
            message.add_attachment(
                content,
                subtype=subtype,
                charset="utf-8",
                filename=attachment.filename,
                params=params,
            )
            return
    message.add_attachment(
        content,
        maintype=maintype,
        subtype=subtype,
        filename=attachment.filename,
        params=params,
    )


def build_email(
    *,
    from_email: str,
    from_name: str | None,
    to: str | Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    attachments: Iterable[Attachment] = (),
    message_id: str,
    language: str | None = None,
    headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """One message, ready for ``send_smtp``. Raises ``ValueError`` on a bad argument.

    ``message_id`` is ours and stable (e.g. ``dlv_01J...`` or ``dlv_01J...@clinic.example``);
    ``language`` is a BCP 47 tag for ``Content-Language``; ``headers`` adds others
    (``Reply-To``, ``List-Unsubscribe``, ``Auto-Submitted``...) but cannot replace ours.
    """
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise ValueError("to: at least one recipient is required")
    message = EmailMessage(policy=POLICY)
    message["From"] = Address(display_name=from_name or "", addr_spec=from_email)
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = normalize_message_id(message_id, from_email)
    if language is not None and not _LANGUAGE.match(language):
        raise ValueError(f"language is not a BCP 47 tag: {language!r}")
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
            raise ValueError(f"headers: {name!r} cannot be set here")
        message[name] = value
    message.set_content(text, charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
    for attachment in attachments:
        _add_attachment(message, attachment)
    if language is not None:  # after the content: set_content clears Content-* headers
        message["Content-Language"] = language
    return message


def send_smtp(
    settings: SmtpSettings | Mapping[str, Any],
    credentials: Mapping[str, Secret | str] | None,
    message: EmailMessage,
    *,
    integration: str = "smtp",
    pool: SessionPool | None = None,
    pool_key: str | None = None,
) -> str:
    """Send ``message`` through the configured server; returns its Message-ID. With a
    ``pool``, through a session kept open for the next message of the same ``pool_key``.

    ``settings`` and ``credentials`` are the ``smtp`` integration's (opened
    credentials: ``Secret`` or plain strings). Raises ``SmtpError`` (an
    ``ExternalServiceError``; ``retryable`` tells a job whether to try again).
    Recipients refused while others were accepted do not fail the send: the
    message went out, and sending it again would duplicate it.
    """
    message_id = message["Message-ID"]
    if not message_id:
        raise ValueError("message has no Message-ID: build it with build_email")
    if pool is not None and pool_key is not None:
        pool.send(settings, credentials, message, integration=integration, key=pool_key)
        return str(message_id)
    with smtp_session(settings, credentials, integration=integration) as conn:
        conn.send_message(message)
    return str(message_id)
