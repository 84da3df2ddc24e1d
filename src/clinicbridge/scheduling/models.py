"""Tables owned by the scheduling package.

Times of day (working hours, exceptions) are minutes after midnight in the
provider's own timezone, so that 09:00 stays 09:00 across DST changes; instants
(bookings, busy blocks) are UTC.

No double booking is enforced by the database, not only in Python: every booking
holds a seat on a ``time_claims`` row, and active claims of one provider may not
overlap (buffers included). PostgreSQL enforces it with an exclusion constraint,
SQLite with a trigger (SQLite serializes writers, so the trigger's check and the
insert are atomic).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.patients import models as _patient_models  # noqa: F401  (patients: FK target)

MODALITIES = ("in_person", "video")
EXCEPTION_KINDS = ("time_off", "extra_hours")
BOOKING_STATUSES = (
    "held",
    "pending_payment",
    "booked",
    "confirmed",
    "cancelled",
    "no_show",
    "completed",
    "expired",
)
# these occupy their time claim; pending_payment is a hold while the patient pays
ACTIVE_STATUSES = ("held", "pending_payment", "booked", "confirmed")
HOLD_STATUSES = ("held", "pending_payment")  # released when hold_expires_at passes


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class Location(Base):
    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    address: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    phone: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Provider(Base):
    """A practitioner who can be booked (not an outside service: those are integrations)."""

    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    display_name: Mapped[str] = mapped_column(sa.String(200))
    email: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    timezone: Mapped[str] = mapped_column(sa.String(64))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    # Bumped by database triggers whenever anything that shapes this provider's slots
    # changes (claims, busy blocks, hours, exceptions, services given): the key under
    # which computed availability may be reused. Never written by Python.
    schedule_version: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkingHours(Base):
    """A weekly interval (weekday 0 = Monday) a provider works at a location."""

    __tablename__ = "working_hours"
    __table_args__ = (
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        sa.CheckConstraint(
            "start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute",
            name="minutes",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    provider_id: Mapped[str] = mapped_column(
        sa.ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    location_id: Mapped[str] = mapped_column(sa.ForeignKey("locations.id", ondelete="CASCADE"))
    weekday: Mapped[int] = mapped_column(sa.SmallInteger)
    start_minute: Mapped[int] = mapped_column(sa.SmallInteger)
    end_minute: Mapped[int] = mapped_column(sa.SmallInteger)


class ScheduleException(Base):
    """A date on which a provider's hours differ: ``time_off`` (all day when the
    minutes are null) or ``extra_hours`` at a location."""

    __tablename__ = "schedule_exceptions"
    __table_args__ = (
        sa.Index("ix_schedule_exceptions_provider_date", "provider_id", "on_date"),
        sa.CheckConstraint(
            "(start_minute IS NULL AND end_minute IS NULL) OR "
            "(start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute)",
            name="minutes",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    location_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("locations.id", ondelete="CASCADE"), nullable=True
    )
    on_date: Mapped[date] = mapped_column(sa.Date)
    kind: Mapped[str] = mapped_column(sa.String(16))
    start_minute: Mapped[int | None] = mapped_column(sa.SmallInteger, nullable=True)
    end_minute: Mapped[int | None] = mapped_column(sa.SmallInteger, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BusyBlock(Base):
    """Time a provider cannot be booked: entered by staff or imported from a calendar."""

    __tablename__ = "busy_blocks"
    __table_args__ = (
        sa.Index("ix_busy_blocks_provider_time", "provider_id", "starts_at", "ends_at"),
        sa.Index(
            "uq_busy_blocks_external",
            "provider_id",
            "source",
            "external_id",
            unique=True,
            postgresql_where=sa.text("external_id IS NOT NULL"),
            sqlite_where=sa.text("external_id IS NOT NULL"),
        ),
        sa.CheckConstraint("starts_at < ends_at", name="range"),
        sa.Index("ix_busy_blocks_connection_group", "connection_id", "external_group"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(sa.String(32))  # manual, or a calendar connection id
    external_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    # Imported from an outside calendar (calendars package): the connection (its blocks go
    # with it) and the outside event a recurring instance belongs to (deleted together).
    connection_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("calendar_connections.id", ondelete="CASCADE"), nullable=True
    )
    external_group: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Service(Base):
    """An appointment type."""

    __tablename__ = "services"
    __table_args__ = (
        sa.CheckConstraint("duration_minutes > 0", name="duration"),
        sa.CheckConstraint("capacity >= 1", name="capacity"),
        sa.CheckConstraint("slot_interval_minutes > 0", name="interval"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    duration_minutes: Mapped[int] = mapped_column(sa.Integer)
    buffer_before_minutes: Mapped[int] = mapped_column(sa.Integer, default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(sa.Integer, default=0)
    slot_interval_minutes: Mapped[int] = mapped_column(sa.Integer)
    min_notice_minutes: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_advance_days: Mapped[int] = mapped_column(sa.Integer, default=90)
    cancellation_window_minutes: Mapped[int] = mapped_column(sa.Integer, default=0)
    capacity: Mapped[int] = mapped_column(sa.Integer, default=1)
    price_minor: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    currency: Mapped[str | None] = mapped_column(sa.String(3), nullable=True)
    # What "payment": "deposit" asks for at booking (minor units, the price's currency).
    deposit_minor: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    modality: Mapped[str] = mapped_column(sa.String(16))
    is_public: Mapped[bool] = mapped_column(sa.Boolean, default=True)  # on the clinic website
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ServiceProvider(Base):
    """Which providers may give a service."""

    __tablename__ = "service_providers"

    service_id: Mapped[str] = mapped_column(
        sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    provider_id: Mapped[str] = mapped_column(
        sa.ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)


class TimeClaim(Base):
    """A provider's time taken by bookings: ``[blocked_from, blocked_until)`` is the
    appointment plus its buffers. Group services seat up to ``capacity`` bookings on
    one claim. A claim with no seat left taken is inactive and frees the time."""

    __tablename__ = "time_claims"
    __table_args__ = (
        sa.Index("ix_time_claims_provider_time", "provider_id", "blocked_from", "blocked_until"),
        sa.CheckConstraint("blocked_from < blocked_until", name="range"),
        sa.CheckConstraint("seats_taken >= 0 AND seats_taken <= capacity", name="seats"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    service_id: Mapped[str] = mapped_column(sa.ForeignKey("services.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    blocked_from: Mapped[datetime] = mapped_column(UTCDateTime())
    blocked_until: Mapped[datetime] = mapped_column(UTCDateTime())
    capacity: Mapped[int] = mapped_column(sa.Integer)
    seats_taken: Mapped[int] = mapped_column(sa.Integer)
    active: Mapped[bool] = mapped_column(sa.Boolean)


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "confirmation_code"),
        sa.Index("ix_bookings_tenant_provider_start", "tenant_id", "provider_id", "starts_at"),
        sa.Index("ix_bookings_tenant_start", "tenant_id", "starts_at"),
        sa.Index("ix_bookings_patient", "patient_id", "starts_at"),
        sa.Index(
            "ix_bookings_hold_expiry",
            "hold_expires_at",
            postgresql_where=sa.text("status = 'held'"),
            sqlite_where=sa.text("status = 'held'"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    claim_id: Mapped[str] = mapped_column(sa.ForeignKey("time_claims.id"), index=True)
    service_id: Mapped[str] = mapped_column(sa.ForeignKey("services.id"))
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id"))
    location_id: Mapped[str | None] = mapped_column(sa.ForeignKey("locations.id"), nullable=True)
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id"))
    status: Mapped[str] = mapped_column(sa.String(16))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmation_code: Mapped[str] = mapped_column(sa.String(16))
    hold_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    source: Mapped[str] = mapped_column(sa.String(16))  # api, admin, public, voice
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BookingChange(Base):
    """The history of a booking: one row per change, never updated."""

    __tablename__ = "booking_changes"
    __table_args__ = (sa.Index("ix_booking_changes_booking", "booking_id", "at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    booking_id: Mapped[str] = mapped_column(sa.ForeignKey("bookings.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(sa.String(32))  # created, rescheduled, cancelled, ...
    from_status: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(sa.String(16))
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    actor_type: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class IcalFeed(Base):
    """A secret, revocable iCalendar feed of one provider's bookings. Only the token's
    SHA-256 is stored; the token is shown once."""

    __tablename__ = "ical_feeds"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
