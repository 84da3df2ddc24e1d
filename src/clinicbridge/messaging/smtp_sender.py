"""E-mail through any SMTP server. SMTP cannot be asked whether a message arrived, so
a send cut short is never resent (see ``sending``)."""

from __future__ import annotations

import base64
from datetime import datetime

from clinicbridge.messaging.email import Attachment, build_email, send_smtp
from clinicbridge.messaging.providers import Outgoing, Sender, register


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
    return send_smtp(out.settings, out.credentials, email)


register(Sender("smtp", ("email",), send_email))
