"""Tables owned by the outbound HTTP client."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime


class HttpCall(Base):
    """One outbound call: what, where, how long, how it ended. Never bodies or secrets."""

    __tablename__ = "http_calls"
    __table_args__ = (sa.Index("ix_http_calls_integration_time", "integration", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True, index=True)
    integration: Mapped[str] = mapped_column(sa.String(64))
    operation: Mapped[str] = mapped_column(sa.String(128))
    method: Mapped[str] = mapped_column(sa.String(10))
    host: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    success: Mapped[bool] = mapped_column(sa.Boolean)
    error_class: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RateBucket(Base):
    """A token bucket per (clinic, integration), shared by every process."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
