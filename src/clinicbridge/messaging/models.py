"""Tables of the messaging package: every message to a patient and its status timeline.

A message row is written before anything is sent, in the transaction that asked
for it, together with the job that sends it. ``send_started_at`` is set (and
committed) before the provider is called, so a worker that dies mid-send leaves
a trace: the next attempt reconciles instead of sending blindly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.patients import models as _patient_models  # noqa: F401  (FK target)

CHANNELS = ("sms", "email", "whatsapp", "push")
# queued -> sending -> sent -> delivered | undelivered | failed | read | bounced | ...
STATUSES = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "bounced",
    "dropped",
    "opened",
    "clicked",
    "complained",
    "suppressed",
    "unknown",
)
# settled: the send job has nothing (more) to do
FINAL_SEND_STATUSES = tuple(s for s in STATUSES if s not in ("queued", "sending"))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("ix_messages_tenant_created", "tenant_id", "created_at"),
        sa.Index("ix_messages_patient", "patient_id", "created_at"),
        sa.Index("uq_messages_dedupe", "tenant_id", "dedupe_key", unique=True),
        sa.Index(
            "uq_messages_provider_id",
            "provider",
            "provider_message_id",
            unique=True,
            postgresql_where=sa.text("provider_message_id IS NOT NULL"),
            sqlite_where=sa.text("provider_message_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    patient_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=True
    )
    booking_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    integration_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    provider: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)  # connector key
    kind: Mapped[str] = mapped_column(sa.String(64))  # template kind, or "literal"
    language: Mapped[str | None] = mapped_column(sa.String(35), nullable=True)
    to_address: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    subject: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    body: Mapped[str] = mapped_column(sa.Text)
    html: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON, nullable=True)
    # A provider-approved template the provider renders itself, {"id", "variables"}: a
    # Twilio Content SID with {"1": ...}, or a SendGrid dynamic template with the message's
    # variables. ``body`` (and ``html``) are our own rendering, used by any other provider.
    provider_template: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    cost_minor: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    cost_currency: Mapped[str | None] = mapped_column(sa.String(3), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MessageEvent(Base):
    """One step of a message's status timeline; never updated."""

    __tablename__ = "message_events"
    __table_args__ = (sa.Index("ix_message_events_message", "message_id", "at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(sa.ForeignKey("messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16))
    detail: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    source: Mapped[str] = mapped_column(sa.String(16))  # api, worker, provider, system
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClinicTemplate(Base):
    """A clinic's own wording of a message kind on a channel in a language; it wins over
    the built-in template at the same step of the language chain."""

    __tablename__ = "message_templates"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "kind", "channel", "language"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(64))
    channel: Mapped[str] = mapped_column(sa.String(16))
    language: Mapped[str] = mapped_column(sa.String(35))
    subject: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    body: Mapped[str] = mapped_column(sa.Text)
    html: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    variables: Mapped[list[str] | None] = mapped_column(sa.JSON, nullable=True)  # custom kinds
    # WhatsApp: the approved template (Twilio Content SID) and, in order, the variables
    # that fill its {{1}}, {{2}}...; business-initiated WhatsApp messages need one.
    provider_template_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    provider_template_variables: Mapped[list[str] | None] = mapped_column(sa.JSON, nullable=True)
    updated_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
