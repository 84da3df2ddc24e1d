"""Messages from patients: every SMS or WhatsApp reply that reaches a clinic.

Each inbound message is stored once (unique provider id per integration), with what
ClinicBridge made of it (``handled_as``: an opt-out, a confirmation, a reschedule
request, or a message for staff). A patient's conversation is these rows and the
messages the clinic sent them (``messages``), in time order.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.patients import models as _patient_models  # noqa: F401  (FK target)

# What an inbound message was taken as.
HANDLED_AS = ("opt_out", "opt_in", "help", "confirm", "reschedule_request", "conversation")


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (
        sa.Index("ix_inbound_messages_patient", "tenant_id", "patient_id", "received_at"),
        sa.Index("ix_inbound_messages_unread", "tenant_id", "read_at", "received_at"),
        sa.Index(
            "uq_inbound_messages_provider_id",
            "integration_id",
            "provider_message_id",
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    integration_id: Mapped[str] = mapped_column(sa.String(32))
    channel: Mapped[str] = mapped_column(sa.String(16))  # sms | whatsapp
    # The sender's patient, when exactly one patient of the clinic has that number.
    patient_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=True
    )
    from_address: Mapped[str] = mapped_column(sa.String(64))
    body: Mapped[str] = mapped_column(sa.Text)
    provider_message_id: Mapped[str] = mapped_column(sa.String(255))
    handled_as: Mapped[str] = mapped_column(sa.String(32))
    booking_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    read_by: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
