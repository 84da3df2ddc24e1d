"""Tables owned by the voice package: calls (with their caller verification) and the
log of every tool call the voice assistant made."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime


class VoiceCall(Base):
    """One phone call handled by a voice integration. ``verified_patient_id`` is set once
    the caller matched a patient (name + date of birth, or the calling number on file)."""

    __tablename__ = "voice_calls"
    __table_args__ = (sa.UniqueConstraint("integration_id", "call_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    call_id: Mapped[str] = mapped_column(sa.String(128))
    caller_number: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)  # E.164
    verified_patient_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    verified_via: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VoiceToolCall(Base):
    """One tool call: what ran, for whom, whether it worked, how long it took."""

    __tablename__ = "voice_tool_calls"
    __table_args__ = (sa.Index("ix_voice_tool_calls_tenant_time", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    call_id: Mapped[str] = mapped_column(sa.String(128))
    tool_call_id: Mapped[str] = mapped_column(sa.String(128))
    tool: Mapped[str] = mapped_column(sa.String(64))
    patient_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    success: Mapped[bool] = mapped_column(sa.Boolean)
    error_code: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    phi_accessed: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
