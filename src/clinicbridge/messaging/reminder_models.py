"""Tables of appointment reminders: the clinic's rules and each booking's reminders.

A rule belongs to a clinic (``service_id`` null: the clinic's default) or to one
service. ``booking_reminders`` holds one row per booking and offset (unique), so
scheduling twice never makes a second reminder; the row says what became of it
(scheduled, sent, skipped with a reason, cancelled, failed on every channel).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.scheduling import models as _scheduling_models  # noqa: F401  (FK target)

DEFAULT_OFFSETS = (1440, 120)  # minutes before the start: 24 h and 2 h
DEFAULT_CHANNELS = ("sms", "email")  # in preference order
DEFAULT_QUIET_START = 21 * 60  # 21:00, the clinic's time
DEFAULT_QUIET_END = 8 * 60  # 08:00
DEFAULT_MIN_LEAD = 60  # a reminder moved later than start - this is skipped
REMINDER_STATUSES = ("scheduled", "sent", "skipped", "cancelled", "failed")


class ReminderRule(Base):
    __tablename__ = "reminder_rules"
    __table_args__ = (
        sa.Index("uq_reminder_rules_service", "tenant_id", "service_id", unique=True),
        sa.Index(
            "uq_reminder_rules_default",
            "tenant_id",
            unique=True,
            postgresql_where=sa.text("service_id IS NULL"),
            sqlite_where=sa.text("service_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    service_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("services.id", ondelete="CASCADE"), nullable=True
    )
    offsets: Mapped[list[int]] = mapped_column(sa.JSON, default=lambda: list(DEFAULT_OFFSETS))
    channels: Mapped[list[str]] = mapped_column(sa.JSON, default=lambda: list(DEFAULT_CHANNELS))
    quiet_start: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_QUIET_START)
    quiet_end: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_QUIET_END)
    min_lead_minutes: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_MIN_LEAD)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BookingReminder(Base):
    """One reminder of one booking; ``starts_at`` is the start it was planned for."""

    __tablename__ = "booking_reminders"
    __table_args__ = (
        sa.Index("uq_booking_reminders_offset", "booking_id", "offset_minutes", unique=True),
        sa.Index("ix_booking_reminders_tenant_due", "tenant_id", "due_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    booking_id: Mapped[str] = mapped_column(sa.ForeignKey("bookings.id", ondelete="CASCADE"))
    offset_minutes: Mapped[int] = mapped_column(sa.Integer)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    job_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    channel: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    message_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
