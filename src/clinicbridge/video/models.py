"""Tables owned by the video package."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.integrations import models as _integration_models  # noqa: F401  (FK target)
from clinicbridge.scheduling import models as _scheduling_models  # noqa: F401  (FK target)

STATUSES = ("ready", "failed", "deleted")


class VideoMeeting(Base):
    """A booking's meeting. ``links`` holds vault ciphertexts only (``join_url`` for the
    patient, ``host_url`` for the provider: both open the meeting, so both are secrets),
    sealed for this meeting's id; ``version`` is the booking version they match."""

    __tablename__ = "video_meetings"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    booking_id: Mapped[str] = mapped_column(
        sa.ForeignKey("bookings.id", ondelete="CASCADE"), unique=True
    )
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    connector: Mapped[str] = mapped_column(sa.String(64))
    external_id: Mapped[str] = mapped_column(sa.String(255))  # Daily room name, Zoom meeting id
    links: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16))
    version: Mapped[int] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
