"""Tables owned by the integrations package."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime

STATUSES = ("active", "disabled", "error", "needs_reauth")


class Integration(Base):
    """One clinic's connection to one outside service.

    ``credentials`` holds vault ciphertexts only (field → sealed value); the
    previous webhook secret keeps verifying until ``previous_secret_expires_at``.
    """

    __tablename__ = "integrations"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    connector: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    credentials: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    credential_hints: Mapped[dict[str, str | None]] = mapped_column(sa.JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    previous_webhook_secret: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True
    )
    last_test_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_test_ok: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    last_test_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    updated_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Alert(Base):
    """An incident on an integration or a webhook endpoint: opened once per incident,
    resolved on recovery (no alert storms). No foreign key: alerts outlive subjects."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index(
            "uq_alerts_open",
            "tenant_id",
            "subject_id",
            "rule",
            unique=True,
            postgresql_where=sa.text("status = 'open'"),
            sqlite_where=sa.text("status = 'open'"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    subject_type: Mapped[str] = mapped_column(sa.String(32))  # integration, webhook_endpoint
    subject_id: Mapped[str] = mapped_column(sa.String(32))
    rule: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
