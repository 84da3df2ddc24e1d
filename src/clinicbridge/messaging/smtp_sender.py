"""E-mail through any SMTP server. SMTP cannot be asked whether a message arrived, so
a send cut short is never resent (see ``sending``); neither is one whose connection
broke during DATA before the server answered (``OutcomeUnknownError``).

Sessions are kept open between messages (one per integration configuration and
handler thread), so a burst of reminders does not connect and log in for each one.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
from datetime import datetime

from clinicbridge.core.secrets import Secret
from clinicbridge.integrations.connectors.smtp import SessionPool, SmtpError
from clinicbridge.messaging.email import Attachment, build_email, send_smtp
from clinicbridge.messaging.providers import OutcomeUnknownError, Outgoing, Sender, register

POOL = SessionPool()
atexit.register(POOL.close_all)


def pool_key(out: Outgoing) -> str:
    """The integration and a digest of its whole configuration: a change of server or
    password never reuses a session opened with the old one."""
    creds = {k: v.reveal() if isinstance(v, Secret) else str(v) for k, v in out.credentials.items()}
    digest = hashlib.sha256(
        json.dumps([out.settings, creds], sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"{out.integration_id}:{digest}"


def _content(attachment: dict[str, str]) -> bytes | str:
    """Text as stored; binary files (a receipt's PDF) are stored base64-encoded."""
    if attachment.get("encoding") == "base64":
        return base64.b64decode(attachment["content"])
    return attachment["content"]


def send_email(out: Outgoing, now: datetime) -> str:
    email = build_email(
        from_email=out.settings["from_email"],
        from_name=out.settings.get("from_name"),
        to=out.to_address,
        subject=out.subject or "",
        text=out.body,
        html=out.html,
        attachments=[
            Attachment(a["filename"], _content(a), a.get("content_type", "text/plain"))
            for a in out.attachments
        ],
        message_id=out.message_id,  # ours: the same on every attempt
        language=out.language,
        date=now,
    )
    try:
        return send_smtp(
            out.settings, out.credentials, email, integration=out.integration_id,
            pool=POOL, pool_key=pool_key(out),
        )  # fmt: skip
    except SmtpError as exc:
        if exc.maybe_delivered:
            raise OutcomeUnknownError(
                f"{exc.detail}; the server may have taken the message, so it is not resent",
                integration=exc.integration,
                status_code=exc.status_code,
            ) from None
        raise


register(Sender("smtp", ("email",), send_email))
